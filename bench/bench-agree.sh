#!/usr/bin/env bash
# bench/bench-agree.sh — does `quarry bench --mount` measure what the bench/ scripts measure?
# (issue 7: "quarry bench figures agree within 20% with the bench/ scripts on the same mount").
#
# Usage (from the repository root, as root so that page caches can be dropped):
#
#     bash bench/bench-agree.sh
#     ROUNDS=3 SEQ_MB=2048 NFILES=10000 bash bench/bench-agree.sh
#
# One `quarry up --mount` cluster (3 Raft masters + 3 chunkservers + the FUSE mount, as in
# bench/fsbench.sh). On that one mount, ROUNDS times, for the data rows and then the metadata
# rows, both sides back to back (script first in odd rounds, quarry bench first in even ones):
#   * the shared harness ../shared/bench/fsbench.sh with REPS=1 and TESTS=seq (SEQ_MB) or
#     TESTS=meta (NFILES) — what bench/fsbench.sh runs for issue 3's rows;
#   * `quarry bench --mount MNT --clients 1 --json` with `--only write,read --big-mib SEQ_MB` or
#     `--only create,stat,rename,unlink --files NFILES`.
# Then, per pair of rows that measure the same thing, the median of each side and the ratio
# quarry-bench / script; a pair agrees when the ratio is within [0.8, 1.2]:
#     write  (1 MiB writes, fsync at the end)      ~ seqwrite_rand (dd bs=1M conv=fsync)
#     read   (cold: caches dropped first)          ~ seqread_cold
#     create (open O_CREAT|O_EXCL + close)         ~ create_empty
#     stat   (lstat of each file, cold)            ~ stat_py: the harness's own per-file loop,
#            `fsbench-meta.py stat` (os.stat of each of NFILES files, caches dropped first),
#            run here after fsbench.sh in each round (create, rename, stat, unlink)
#     rename (same directory)                      ~ rename
#     unlink                                       ~ unlink
# fsbench.sh's own stat row, stat_ls_l (`ls -l` of the directory), is shown but not paired:
# `ls -l` also asks for each file's ACL xattr (one more FUSE request per file), so it measures
# a different operation from a stat loop.
# The last line is "N passed, N failed"; the exit status is non-zero when a pair disagrees.
#
# Environment: ROUNDS=2 SEQ_MB=1024 NFILES=2000 QUARRY_BIN=PATH (else cargo build --release)
#   SHARED_BENCH=<repo>/../shared/bench OUT=DIR (default /tmp/quarry-agree.<date>)
set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-2}
SEQ_MB=${SEQ_MB:-1024}
NFILES=${NFILES:-2000}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
SHARED=${SHARED_BENCH:-$(cd "$REPO/.." && pwd)/shared/bench}
OUT=${OUT:-${TMPDIR:-/tmp}/quarry-agree.$(date +%Y%m%dT%H%M%S)}

log() { echo "[bench-agree] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -r $SHARED/fsbench.sh ]] || die "no shared harness at $SHARED"
[[ $(id -u) == 0 ]] || log "WARNING: not root: caches cannot be dropped (cold rows are warm)"

if [[ -z ${QUARRY_BIN:-} ]]; then
  log "building: cargo build --release -p quarry"
  (cd "$REPO" && cargo build --release -p quarry) >&2
  QUARRY_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/quarry
fi
[[ -x $QUARRY_BIN ]] || die "no quarry binary at $QUARRY_BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/quarry-agree.XXXXXX")
mkdir -p "$OUT" "$TMP/qmnt"
. "$HERE/quarry-up.sh"
bench_inputs_need
cleanup() {
  local rc=$?
  set +e
  quarry_up_stop "$TMP/qmnt"
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$QUARRY_BIN" "$TMP/quarry"
log "starting quarry up --data $TMP/qdata --mount $TMP/qmnt"
quarry_up_start "$TMP/quarry" "$TMP/qdata" "$TMP/qmnt" "$TMP/quarry-up.log" || die "quarry up did not mount"
echo "quarry_up:$QPID" > "$TMP/pids"

{
  echo "# quarry $("$TMP/quarry" --version) rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo ?)"
  echo "# ROUNDS=$ROUNDS SEQ_MB=$SEQ_MB NFILES=$NFILES start $(date -u +%FT%TZ) uptime: $(uptime)"
} | tee "$OUT/context.txt" >&2
: > "$OUT/script.txt"
: > "$OUT/bench.jsonl"
script_seq() {
  REPS=1 TESTS=seq SEQ_MB=$SEQ_MB FS_PIDS_FILE=$TMP/pids \
    bash "$SHARED/fsbench.sh" "$TMP/qmnt" script >> "$OUT/script.txt"
}
script_meta() {
  REPS=1 TESTS=meta NFILES=$NFILES FS_PIDS_FILE=$TMP/pids \
    bash "$SHARED/fsbench.sh" "$TMP/qmnt" script >> "$OUT/script.txt"
  local d="$TMP/qmnt/agree-stat.$1" el
  mkdir "$d"
  python3 "$SHARED/fsbench-meta.py" create "$d" "$NFILES" > /dev/null
  python3 "$SHARED/fsbench-meta.py" rename "$d" "$NFILES" > /dev/null
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  el=$(python3 "$SHARED/fsbench-meta.py" stat "$d" "$NFILES")
  echo "script stat_py $(awk "BEGIN { printf \"%.6g\", $NFILES / $el }") files/s n=1" >> "$OUT/script.txt"
  python3 "$SHARED/fsbench-meta.py" unlink "$d" "$NFILES" > /dev/null
  rmdir "$d"
}
bench_seq() {
  "$TMP/quarry" bench --mount "$TMP/qmnt" --clients 1 --big-mib "$SEQ_MB" --only write,read --json \
    >> "$OUT/bench.jsonl"
}
bench_meta() {
  "$TMP/quarry" bench --mount "$TMP/qmnt" --clients 1 --files "$NFILES" \
    --only create,stat,rename,unlink --json >> "$OUT/bench.jsonl"
}
# The two sides alternate per group of rows (data, then metadata), and which side goes first
# alternates per round (A B, B A, ...), so that a change in the machine's load over a few minutes
# falls on both sides rather than on one.
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then order="script bench"; else order="bench script"; fi
  for group in seq meta; do
    for side in $order; do
      log "round $r/$ROUNDS: $group: $side"
      "${side}_${group}" "$r"
    done
  done
done
echo "# end $(date -u +%FT%TZ) uptime: $(uptime)" | tee -a "$OUT/context.txt" >&2
kill -0 "$QPID" 2>/dev/null || die "quarry up died during the run (see $TMP/quarry-up.log)"

python3 - "$OUT/script.txt" "$OUT/bench.jsonl" <<'EOF' | tee "$OUT/agree.md"
import json, statistics, sys
script = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 4 and not f[0].startswith("#") and f[2] != "NA":
        script.setdefault(f[1], []).append(float(f[2]))
bench = {}
for line in open(sys.argv[2]):
    line = line.strip()
    if line.startswith("{"):
        o = json.loads(line)
        bench.setdefault(o["phase"], []).append(float(o["rate"]))
pairs = [("write", "seqwrite_rand", "MiB/s"), ("read", "seqread_cold", "MiB/s"),
         ("create", "create_empty", "files/s"), ("stat", "stat_py", "files/s"),
         ("rename", "rename", "files/s"), ("unlink", "unlink", "files/s")]
passed = failed = 0
print("| quarry bench | bench/ script row | unit | quarry bench | script | ratio | within 20% |")
print("|---|---|---|---|---|---|---|")
for b, s, unit in pairs:
    if not bench.get(b) or not script.get(s):
        print("| %s | %s | %s | – | – | n/a | no figure |" % (b, s, unit)); failed += 1; continue
    qb, sc = statistics.median(bench[b]), statistics.median(script[s])
    ratio = qb / sc
    ok = 0.8 <= ratio <= 1.2
    passed += ok; failed += not ok
    print("| %s | %s | %s | %.1f | %.1f | %.2f | %s |" % (b, s, unit, qb, sc, ratio, "yes" if ok else "NO"))
if script.get("stat_ls_l"):
    print("| (not paired) | stat_ls_l (`ls -l`, +1 xattr request per file) | files/s | | %.1f | | |"
          % statistics.median(script["stat_ls_l"]))
print()
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
EOF
