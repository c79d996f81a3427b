#!/usr/bin/env bash
# bench/profile-putget.sh — where the CPU goes during `quarry put` / `quarry get` of a large file
# on the embedded loopback cluster (companion of putget.sh; findings in bench/RESULTS.md).
#
# Usage (root, perf installed; build first, e.g. by running putget.sh once):
#
#     QUARRY_BIN=target/release/quarry SIZE_MB=1024 bash bench/profile-putget.sh [OUTDIR]
#
# Starts its own `quarry up` in a `mktemp -d` directory, then for a put and a cold get (to
# /dev/null) records, at the same time:
#   * `perf record -F $FREQ` of the `quarry up` process (-p PID) and of the client command
#     (flat profiles; CALLGRAPH="--call-graph dwarf,8192" adds call chains, at a cost);
#   * per-thread CPU of `quarry up` from /proc/PID/task/*/stat before/after;
#   * wall time and CPU of both sides.
# Prints the top symbols per side to stdout and keeps the perf.data files in OUTDIR (default: the
# temp dir, which is removed at exit unless OUTDIR is given). Stops its cluster by SIGTERM to the
# PID it started.
set -euo pipefail
export LC_ALL=C
SIZE_MB=${SIZE_MB:-1024}
FREQ=${FREQ:-499}
CALLGRAPH=${CALLGRAPH:-}
TOP=${TOP:-25}
HERE=$(cd "$(dirname "$0")" && pwd)
QUARRY_BIN=$(readlink -f "${QUARRY_BIN:-$(dirname "$HERE")/target/release/quarry}")
[[ -x $QUARRY_BIN ]] || { echo "no quarry binary at $QUARRY_BIN" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf not installed" >&2; exit 1; }
HZ=$(getconf CLK_TCK)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/quarry-profile.XXXXXX")
OUTDIR=${1:-$TMP}; mkdir -p "$OUTDIR"
QPID=
cleanup() {
  set +e
  if [[ -n $QPID ]] && kill -0 "$QPID" 2>/dev/null; then kill -TERM "$QPID"; wait "$QPID"; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$QUARRY_BIN" "$TMP/quarry"; QUARRY_BIN=$TMP/quarry   # immune to a concurrent rebuild
head -c "$((SIZE_MB << 20))" /dev/urandom > "$TMP/big"
export QUARRY_CLUSTER=$TMP/qdata/cluster.toml
"$QUARRY_BIN" up --data "$TMP/qdata" > "$TMP/up.log" 2>&1 &
QPID=$!
deadline=$((SECONDS + 30)); alive=0
while ((SECONDS < deadline)); do
  kill -0 "$QPID" || { cat "$TMP/up.log" >&2; exit 1; }
  if [[ -s $QUARRY_CLUSTER ]]; then
    alive=$(timeout 5 "$QUARRY_BIN" status --json 2>/dev/null | python3 -c '
import json, sys; print(sum(c["alive"] for c in json.load(sys.stdin)["chunkservers"]))' 2>/dev/null || echo 0)
    [[ $alive -ge 3 ]] && break
  fi
  sleep 0.2
done
[[ $alive -ge 3 ]] || { echo "cluster did not come up" >&2; exit 1; }

ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$1" 2>/dev/null || echo 0; }
threads() { # -> "tid ticks" lines of quarry up
  local t
  for t in /proc/"$QPID"/task/*; do echo "${t##*/} $(ticks "$t/stat")"; done
}

busy() { awk '/^cpu / { idle=$5+$6; t=0; for (i=2;i<=NF;i++) t+=$i; print t-idle, t }' /proc/stat; }
faults() { awk '{ sub(/^.*\) /, ""); print $8 }' "/proc/$QPID/stat"; }   # minflt

profile() { # name cmd...
  local name=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches
  threads > "$TMP/th0"
  local s0 f0 b0 a0; s0=$(ticks "/proc/$QPID/stat"); f0=$(faults)
  # shellcheck disable=SC2086
  perf record -q -F "$FREQ" $CALLGRAPH -o "$OUTDIR/$name-server.data" -p "$QPID" 2>/dev/null &
  local ppid=$!
  sleep 0.3   # let perf attach before the client starts
  read -r b0 a0 < <(busy)
  # client: wall, user, sys, minor page faults (GNU time; includes perf record itself)
  # shellcheck disable=SC2086
  /usr/bin/time -f '%e %U %S %R' -o "$TMP/time" \
    perf record -q -F "$FREQ" $CALLGRAPH -o "$OUTDIR/$name-client.data" -- "$@"
  local b1 a1; read -r b1 a1 < <(busy)
  kill -INT "$ppid"; wait "$ppid" || true
  threads > "$TMP/th1"
  local s1 f1; s1=$(ticks "/proc/$QPID/stat"); f1=$(faults)
  local w u s r; read -r w u s r < "$TMP/time"
  echo "== $name: wall $w s; client user $u s, sys $s s, minor faults $r ($(awk "BEGIN{printf \"%.2f\", $r*4096/2^30}") GiB of fresh pages);" \
       "quarry up $(awk "BEGIN{print ($s1-$s0)/$HZ}") CPU-s, minor faults $((f1 - f0)) ($(awk "BEGIN{printf \"%.2f\", ($f1-$f0)*4096/2^30}") GiB);" \
       "machine busy $(awk "BEGIN{printf \"%.0f\", 100*($b1-$b0)/($a1-$a0)}")% of $(nproc) cores"
  echo "-- quarry up per-thread CPU-s (threads with > 0.1 s):"
  awk -v hz="$HZ" 'NR==FNR { a[$1]=$2; next } { d=($2-a[$1])/hz; if (d > 0.1) printf "   tid %s %.2f\n", $1, d }' \
    "$TMP/th0" "$TMP/th1" | sort -k3,3 -rn | head -12 || true
  for side in server client; do
    echo "-- $name $side: samples by object"
    perf report -i "$OUTDIR/$name-$side.data" --no-children --sort dso --stdio 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -6 || true
    echo "-- $name $side: top symbols (% of samples)"
    perf report -i "$OUTDIR/$name-$side.data" --no-children --sort dso,sym --stdio 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -"$TOP" || true
  done
}

profile put "$QUARRY_BIN" put "$TMP/big" /big
profile get bash -c "'$QUARRY_BIN' get /big - > /dev/null"
"$QUARRY_BIN" rm /big
