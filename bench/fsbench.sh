#!/usr/bin/env bash
# bench/fsbench.sh — filesystem benchmark THROUGH THE MOUNT (issue 3): the shared harness
# ../shared/bench/fsbench.sh, in one run, on the Quarry FUSE mount, on MooseFS and on local
# disk, with a table of medians and of ratios vs MooseFS (results go to bench/RESULTS.md).
#
# Usage (from the repository root, as root so that page caches can be dropped):
#
#     ROUNDS=1 bash bench/fsbench.sh
#     bash bench/fsbench.sh RAWFILE     # only reprint the ratio table of an earlier run
#
# What one run does
#   * builds `cargo build --release -p quarry` unless QUARRY_BIN is set (the binary is copied
#     into the temp dir first, so a concurrent rebuild cannot swap it mid-run);
#   * starts `quarry up --data $TMP/qdata --mount $TMP/qmnt` in the background (master + 3
#     chunkservers + the FUSE mount in ONE process, at nice $NICE) and waits (bounded, 60 s)
#     until $TMP/qmnt appears in /proc/mounts; writes $TMP/pids = "quarry_up:PID" for the
#     harness's CPU accounting;
#   * starts MooseFS with ../shared/bench/moosefs-up.sh (MFS_NICE=$NICE; apt-get installs
#     moosefs-* if missing). A MooseFS already mounted at $MFS_ROOT/mnt is used and left
#     running;
#   * runs   NICE=$NICE ROUNDS=$ROUNDS TESTS="$TESTS" OUT=$OUT \
#              bash ../shared/bench/fsbench-compare.sh \
#                quarry=$TMP/qmnt@$TMP/pids moosefs=$MFS_ROOT/mnt@$MFS_ROOT/pids local=$TMP/local
#     The default tests cover issue 3's rows:
#       seq    dd 1 MiB blocks: 2 GiB of zeros and 2 GiB of random data written with
#              conv=fsync, then a cold and a warm read of it;
#       meta   10,000 empty files in one directory: create, `ls -l` (stat all, cold),
#              rename, unlink; mkdir -p / rm -rf of a 1110-directory tree;
#       small  extraction of a Linux 6.1 source subset tarball (~13k entries, ~150 MB; needs
#              apt-get install linux-source-6.1), then du, find, grep -r, rm -rf.
#     `local` is a directory in the temp dir, i.e. on the same disk as both DFSs' data;
#   * prints fsbench-table.py's table and a ratio table (quarry / moosefs per row), appends
#     `uptime` before/after to $OUT/context.txt;
#   * always (trap) stops what it started: SIGTERM to its own `quarry up` (which unmounts
#     before it exits; waited for, SIGKILL after 60 s), then moosefs-down.sh --wipe if it
#     started MooseFS; removes the temp dir.
#
# Environment knobs
#   ROUNDS=1  TESTS="seq meta small"  NICE=0  plus everything fsbench.sh accepts
#             (SEQ_MB=2048, NFILES=10000, TIMEOUT=300 per command, ...)
#   QUARRY_BIN=PATH  QUARRY_REV=LABEL (what QUARRY_BIN was built from)
#   OUT=DIR          default /tmp/quarry-fsbench.<date> (outside the temp dir: it survives)
#   MFS_ROOT=/tmp/mfs  SHARED_BENCH=<repo>/../shared/bench  KEEP_TMP=1
set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-1}
TESTS=${TESTS:-"seq meta small"}
NICE=${NICE:-0}
MFS_ROOT=${MFS_ROOT:-/tmp/mfs}
export MFS_ROOT
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
SHARED=${SHARED_BENCH:-$(cd "$REPO/.." && pwd)/shared/bench}
OUT=${OUT:-${TMPDIR:-/tmp}/quarry-fsbench.$(date +%Y%m%dT%H%M%S)}

log() { echo "[fsbench] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ ratio table
# ratios RAWFILE: median per (label, metric) of the harness's raw lines, quarry / moosefs.
# Throughputs (files/s, MiB/s, dirs/s): ratio = quarry / moosefs (>= 1 meets the target);
# durations (s): ratio = moosefs / quarry, so that >= 1 always means "at least MooseFS".
ratios() {
  python3 - "$1" <<'EOF'
import statistics, sys
runs, units, order = {}, {}, []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 4 or f[0].startswith("#") or f[1].startswith("cpu."):
        continue
    label, metric, value, unit = f[:4]
    vals = next((x[5:].split(",") for x in f[4:] if x.startswith("runs=")), [value])
    if metric not in units:
        order.append(metric)
    units[metric] = unit
    runs.setdefault((label, metric), []).extend(float(v) for v in vals if v not in ("", "NA"))
med = lambda l, m: statistics.median(runs[(l, m)]) if runs.get((l, m)) else None
print("| metric | unit | quarry | moosefs | local | quarry vs MooseFS (>= 1 meets) |")
print("|---|---|---|---|---|---|")
for m in order:
    if m.endswith("_ok"):
        continue
    q, mf, lo = med("quarry", m), med("moosefs", m), med("local", m)
    fmt = lambda x: "–" if x is None else ("%.0f" % x if x >= 100 else "%.3g" % x)
    if q is None or mf is None or q == 0 or mf == 0:
        r = "n/a"
    else:
        r = "%.2f" % ((mf / q) if units[m] == "s" else (q / mf))
    print("| %s | %s | %s | %s | %s | %s |" % (m, units[m], fmt(q), fmt(mf), fmt(lo), r))
EOF
}
if [[ -n ${1:-} ]]; then ratios "$1"; exit 0; fi

[[ -r $SHARED/fsbench-compare.sh ]] || die "no shared harness at $SHARED"
[[ $(id -u) == 0 ]] || log "WARNING: not root: caches cannot be dropped, mounts may fail"

# ------------------------------------------------------------------ build
if [[ -z ${QUARRY_BIN:-} ]]; then
  log "building: cargo build --release -p quarry"
  (cd "$REPO" && cargo build --release -p quarry) >&2
  QUARRY_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/quarry
  QUARRY_REV=${QUARRY_REV:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")$(
    [[ -z $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]] || echo "+uncommitted-changes")}
fi
[[ -x $QUARRY_BIN ]] || die "no quarry binary at $QUARRY_BIN"
QUARRY_REV=${QUARRY_REV:-"unknown (QUARRY_BIN given; set QUARRY_REV to label it)"}

# ------------------------------------------------------------------ temp dir, cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/quarry-fsbench.XXXXXX")
mkdir -p "$OUT" "$TMP/qmnt" "$TMP/local"
QPID=
MFS_STARTED=0
cleanup() {
  local rc=$?
  set +e
  if [[ -n $QPID ]] && kill -0 "$QPID" 2>/dev/null; then
    log "stopping quarry up (pid $QPID; it unmounts $TMP/qmnt)"
    kill -TERM "$QPID"
    for _ in $(seq 1 300); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$QPID" 2>/dev/null && { log "quarry up did not stop in 60 s; SIGKILL"; kill -KILL "$QPID"; }
    wait "$QPID" 2>/dev/null
  fi
  # a mount left behind by a killed `quarry up` (only ours, by path)
  if grep -q " $TMP/qmnt " /proc/mounts; then
    log "unmounting leftover $TMP/qmnt"
    fusermount3 -u "$TMP/qmnt" 2>/dev/null || umount -l "$TMP/qmnt"
  fi
  if [[ $MFS_STARTED == 1 ]]; then
    bash "$SHARED/moosefs-down.sh" --wipe || log "moosefs-down.sh failed"
  fi
  if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$QUARRY_BIN" "$TMP/quarry"
QUARRY_SRC=$(readlink -f "$QUARRY_BIN")
QUARRY_BIN=$TMP/quarry

. "$HERE/quarry-up.sh"
bench_inputs_need
# ------------------------------------------------------------------ Quarry cluster + mount
log "starting quarry up --data $TMP/qdata --mount $TMP/qmnt (nice $NICE)"
nice -n "$NICE" "$QUARRY_BIN" up --data "$TMP/qdata" --mount "$TMP/qmnt" > "$TMP/quarry-up.log" 2>&1 &
QPID=$!
deadline=$((SECONDS + 60))
until grep -q " $TMP/qmnt " /proc/mounts; do
  kill -0 "$QPID" 2>/dev/null || { cat "$TMP/quarry-up.log" >&2; die "quarry up exited"; }
  ((SECONDS < deadline)) || { cat "$TMP/quarry-up.log" >&2; die "no mount at $TMP/qmnt after 60 s"; }
  sleep 0.2
done
echo "quarry_up:$QPID" > "$TMP/pids"
log "quarry up: pid $QPID, mounted: $(grep " $TMP/qmnt " /proc/mounts)"

# ------------------------------------------------------------------ MooseFS
if ! command -v mfsmaster >/dev/null || ! command -v mfsmount >/dev/null; then
  log "installing MooseFS from apt"
  apt-get install -y moosefs-master moosefs-chunkserver moosefs-client moosefs-cli >&2
fi
if mountpoint -q "$MFS_ROOT/mnt"; then
  log "MooseFS already mounted at $MFS_ROOT/mnt: using it, leaving it running"
else
  MFS_STARTED=1
  MFS_NICE=$NICE bash "$SHARED/moosefs-up.sh"
fi

# ------------------------------------------------------------------ run
{
  echo "# quarry rev=$QUARRY_REV bin=$QUARRY_SRC pid=$QPID mount=$TMP/qmnt"
  echo "# moosefs $(dpkg-query -W -f='${Version}' moosefs-master 2>/dev/null) pids=$(tr '\n' ' ' < "$MFS_ROOT/pids")"
  echo "# start $(date -u +%FT%TZ) uptime: $(uptime)"
} | tee "$OUT/context.txt" >&2
NICE=$NICE ROUNDS=$ROUNDS TESTS=$TESTS OUT=$OUT bash "$SHARED/fsbench-compare.sh" \
  "quarry=$TMP/qmnt@$TMP/pids" "moosefs=$MFS_ROOT/mnt@$MFS_ROOT/pids" "local=$TMP/local"
echo "# end $(date -u +%FT%TZ) uptime: $(uptime)" | tee -a "$OUT/context.txt" >&2
kill -0 "$QPID" 2>/dev/null || log "WARNING: quarry up died during the run (see $TMP/quarry-up.log)"
ratios "$OUT/raw.txt" | tee "$OUT/ratios.md"
log "results in $OUT (raw.txt, table.md, table-cpu.md, ratios.md, context.txt)"
