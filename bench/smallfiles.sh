#!/usr/bin/env bash
# bench/smallfiles.sh A_BIN [B_BIN] — small files through the mount, per file and per request:
# each round starts `quarry up --mount` with one binary, extracts a kernel source subset into
# the mount (`tar -xf`), then times `grep -rF` (every file opened and read), `du -s` (a stat
# of each), `ls -lR` (a stat and the extended attributes ls asks of each) and `rm -rf`, each
# after `sync` + dropped caches. For each step it prints the time
# per file and, from the node's /metrics before and after, how many FUSE operations and RPCs
# each file cost and their mean latency (server side for RPCs). With two binaries the rounds
# alternate A B, B A, ... and the last table gives the median ms per file of each and B / A.
#
#     bash bench/smallfiles.sh /tmp/quarry-base /tmp/quarry-new
#     ROUNDS=3 SUBSET=kernel bash bench/smallfiles.sh OLD NEW
#
# The tarball: the directory SUBSET (default `kernel`, 592 entries) of the Linux source that the
# shared harness builds (../shared/bench/fsbench.sh, from Debian's linux-source-6.1, installed
# when missing). Run as root (caches are dropped). Environment: ROUNDS=2 SUBSET=kernel
# OUT=DIR (default /tmp/quarry-smallfiles.<date>) TOP=14 (rows of each step's request table).
set -euo pipefail
export LC_ALL=C
A=${1:?usage: smallfiles.sh A_BIN [B_BIN]}
B=${2:-}
ROUNDS=${ROUNDS:-2}
SUBSET=${SUBSET:-kernel}
TOP=${TOP:-14}
OUT=${OUT:-${TMPDIR:-/tmp}/quarry-smallfiles.$(date +%Y%m%dT%H%M%S)}
HERE=$(cd "$(dirname "$0")" && pwd)
log() { echo "[smallfiles] $*" >&2; }
. "$HERE/quarry-up.sh"
bench_inputs_need
TMP=$(mktemp -d "${TMPDIR:-/tmp}/quarry-smallfiles.XXXXXX")
mkdir -p "$OUT" "$TMP/mnt"
trap 'quarry_up_stop "$TMP/mnt"; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

# The subset tarball, from the kernel source tarball (kept in OUT between runs).
if [[ ! -s $OUT/subset.tar ]]; then
  xz=$(ls /usr/src/linux-source-*.tar.xz | sort -V | tail -1)
  top=$( (tar -tJf "$xz" || true) | head -1 | cut -d/ -f1)   # tar dies of SIGPIPE here
  mkdir -p "$TMP/src"
  tar -xJf "$xz" -C "$TMP/src" "$top/$SUBSET"
  tar -cf "$OUT/subset.tar" -C "$TMP/src" .
  rm -rf "$TMP/src"
fi
cp "$A" "$TMP/quarry-A"
[[ -n $B ]] && cp "$B" "$TMP/quarry-B"
: > "$OUT/results.txt"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; sleep 0.5; }
snap() { curl -s "$1/metrics" | grep -E '^quarry_(fuse_op|rpc_server)_seconds_(count|sum)' | sort -u; }

run_one() { # label
  local bin=$TMP/quarry-$1 url n s e step
  rm -rf "$TMP/data"
  quarry_up_start "$bin" "$TMP/data" "$TMP/mnt" "$TMP/up-$1.log" || exit 1
  url=$(grep -o 'http://[0-9.:]*' "$TMP/up-$1.log" | head -1)
  mkdir "$TMP/mnt/x"
  s=$(date +%s.%N); tar -xf "$OUT/subset.tar" -C "$TMP/mnt/x"; e=$(date +%s.%N)
  n=$(find "$TMP/mnt/x" -type f | wc -l)
  echo "$1 untar $(echo "($e - $s) * 1000 / $n" | bc -l)" >> "$OUT/results.txt"
  for step in grep du ls rm; do
    drop
    snap "$url" > "$TMP/before"
    s=$(date +%s.%N)
    case $step in
      grep) grep -rF zzz-not-there-zzz "$TMP/mnt/x" > /dev/null || true ;;
      du) du -s "$TMP/mnt/x" > /dev/null ;;
      ls) ls -lR "$TMP/mnt/x" > /dev/null ;;
      rm) rm -rf "$TMP/mnt/x" ;;
    esac
    e=$(date +%s.%N)
    snap "$url" > "$TMP/after"
    echo "$1 $step $(echo "($e - $s) * 1000 / $n" | bc -l)" >> "$OUT/results.txt"
    echo "== $1: $step, $n files: $(echo "($e - $s) * 1000 / $n" | bc -l | cut -c1-6) ms per file"
    python3 - "$TMP/before" "$TMP/after" "$n" "$TOP" <<'PY'
import re, sys
def load(p):
    d = {}
    for line in open(p):
        k, v = line.rsplit(" ", 1)
        d[k] = float(v)
    return d
b, a, n, top = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = []
for k in a:
    if "_count" not in k:
        continue
    c = a[k] - b.get(k, 0)
    if c <= 0:
        continue
    sk = k.replace("_count", "_sum")
    s = a[sk] - b.get(sk, 0)
    what = k.split("{")[0].replace("quarry_", "").replace("_seconds_count", "")
    rows.append((s / n * 1e3, c / n, s / c * 1e3, what, re.sub(r".*\{|\}", "", k)))
rows.sort(reverse=True)
print("  %-9s %-8s %-9s %s" % ("ms/file", "n/file", "ms each", "what"))
for r in rows[:top]:
    print("  %-9.3f %-8.2f %-9.3f %s %s" % r)
PY
  done
  quarry_up_stop "$TMP/mnt"
}

for r in $(seq 1 "$ROUNDS"); do
  if [[ -z $B ]]; then order=A; elif (( r % 2 )); then order="A B"; else order="B A"; fi
  for side in $order; do log "round $r: $side"; run_one "$side"; done
done
python3 - "$OUT/results.txt" <<'PY'
import statistics, sys
v = {}
for line in open(sys.argv[1]):
    side, step, ms = line.split()
    v.setdefault((side, step), []).append(float(ms))
steps = ["untar", "grep", "du", "ls", "rm"]
sides = sorted({s for s, _ in v})
print("| step (ms per file, median) | " + " | ".join(sides) + (" | B / A (speed-up) |" if len(sides) == 2 else " |"))
print("|---" * (len(sides) + 1 + (len(sides) == 2)) + "|")
for st in steps:
    meds = [statistics.median(v[(s, st)]) for s in sides]
    row = "| %s | " % st + " | ".join("%.2f" % m for m in meds)
    if len(sides) == 2:
        row += " | %.2f" % (meds[0] / meds[1])
    print(row + " |")
PY
log "raw: $OUT/results.txt"
