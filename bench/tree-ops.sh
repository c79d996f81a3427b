#!/usr/bin/env bash
# bench/tree-ops.sh BIN... — where the time of `grep -r`, `du -s` and `rm -rf` over a small
# source tree goes, per build: for each binary (alternating, ROUNDS times) start
# `quarry up --mount`, extract the tree into the mount (not timed), then drop the page cache
# and time each command, and print per file what each FUSE operation and each server method
# cost (from the /metrics deltas of the run: ms per file, calls per file, ms per call).
# Run as root (caches are dropped).
#
#     bash bench/tree-ops.sh /tmp/quarry-old /tmp/quarry-new
#     ROUNDS=2 TAR=/tmp/kernel.tar bash bench/tree-ops.sh /tmp/quarry-new
#
# TAR defaults to the `kernel/` directory of the Linux source tarball fsbench.sh prepares
# ($LINUX_TAR, default /tmp/fsbench/linux.tar; ~560 files, 12 MB), built once into $OUT.
# Environment: ROUNDS=1 STEPS="grep du rm" TOP=8 OUT=DIR
set -euo pipefail
export LC_ALL=C
[[ $# -ge 1 ]] || { echo "usage: tree-ops.sh BIN..." >&2; exit 2; }
ROUNDS=${ROUNDS:-1}
STEPS=${STEPS:-"grep du rm"}
TOP=${TOP:-8}
OUT=${OUT:-${TMPDIR:-/tmp}/quarry-tree-ops}
LINUX_TAR=${LINUX_TAR:-/tmp/fsbench/linux.tar}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/quarry-up.sh"
log() { echo "[tree-ops] $*" >&2; }
mkdir -p "$OUT"

TAR=${TAR:-$OUT/kernel.tar}
if [[ ! -s $TAR ]]; then
  [[ -s $LINUX_TAR ]] || { log "no $LINUX_TAR: run bench/fsbench.sh once, or set TAR"; exit 1; }
  log "building $TAR from the kernel/ directory of $LINUX_TAR"
  src=$(mktemp -d "${TMPDIR:-/tmp}/tree-ops-src.XXXXXX")
  tar -xf "$LINUX_TAR" -C "$src" --wildcards '*/kernel/*'
  tar -cf "$TAR" -C "$src" .
  rm -rf "$src"
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/tree-ops.XXXXXX")
cleanup() { quarry_up_stop "$T/mnt" 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT

snap() { curl -s "$1/metrics" | grep -E '^quarry_(fuse_op|rpc_server)_seconds_(count|sum)' | sort -u; }

table() { # before after files
  python3 - "$1" "$2" "$3" "$TOP" <<'PY'
import re, sys
def load(p):
    d = {}
    for line in open(p):
        k, v = line.rsplit(' ', 1)
        d[k] = float(v)
    return d
b, a, n, top = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = []
for k, v in a.items():
    if not k.startswith(('quarry_fuse_op_seconds_count', 'quarry_rpc_server_seconds_count')):
        continue
    calls = v - b.get(k, 0)
    # WorkerPoll is the MapReduce workers' long poll: idle time, not work.
    if calls <= 0 or 'WorkerPoll' in k:
        continue
    sk = k.replace('_count', '_sum')
    secs = a[sk] - b.get(sk, 0)
    what = ('fuse ' if 'fuse_op' in k else 'rpc  ') + re.sub(r'.*\{|\}', '', k)
    rows.append((secs / n * 1e3, calls / n, secs / calls * 1e3, what))
rows.sort(reverse=True)
print('  %-9s %-8s %-9s %s' % ('ms/file', 'n/file', 'ms each', 'what'))
for r in rows[:top]:
    print('  %-9.3f %-8.2f %-9.3f %s' % r)
PY
}

for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    rm -rf "$T/data" && mkdir -p "$T/mnt"
    cp "$bin" "$T/quarry"
    quarry_up_start "$T/quarry" "$T/data" "$T/mnt" "$T/up.log"
    url=$(grep -o 'http://[0-9.:]*' "$T/up.log" | head -1)
    mkdir "$T/mnt/x"
    tar -xf "$TAR" -C "$T/mnt/x"
    files=$(find "$T/mnt/x" -type f | wc -l)
    # Let the extraction's lingering holds go and the mount learn the trash retention.
    sleep 3
    for step in $STEPS; do
      case $step in
        grep) cmd=(grep -rF zzqqxxyy "$T/mnt/x") ;;
        du) cmd=(du -s "$T/mnt/x") ;;
        rm) cmd=(rm -rf "$T/mnt/x") ;;
        *) log "unknown step $step"; exit 2 ;;
      esac
      sync; echo 3 > /proc/sys/vm/drop_caches
      snap "$url" > "$T/before"
      s=$(date +%s.%N)
      "${cmd[@]}" > /dev/null || true
      e=$(date +%s.%N)
      snap "$url" > "$T/after"
      secs=$(awk "BEGIN { print $e - $s }")
      echo "== $(basename "$bin") round $round: $step over $files files: $secs s," \
        "$(awk "BEGIN { printf \"%.3f\", ($e - $s) * 1000 / $files }") ms/file"
      table "$T/before" "$T/after" "$files"
    done
    quarry_up_stop "$T/mnt"
  done
done | tee "$OUT/tree-ops.txt"
log "results in $OUT/tree-ops.txt"
