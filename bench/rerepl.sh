#!/usr/bin/env bash
# bench/rerepl.sh — re-replication after a chunkserver dies (issue 5, chunk lifecycle).
#
# Usage (from the repository root):
#
#     bash bench/rerepl.sh                  # 3 GiB, release build of the working tree
#     SIZE_MB=1536 bash bench/rerepl.sh     # smaller
#
# What one run does
#   * builds `cargo build --release -p quarry` unless QUARRY_BIN is set (the binary is copied
#     into the temp dir first, so a concurrent rebuild cannot swap it mid-run);
#   * starts `quarry up --processes --chunkservers 4` (a master and 4 chunkserver processes,
#     64 MiB chunks, 3 replicas, default timings: 10 s heartbeat timeout, 60 s leases) in a
#     `mktemp -d` directory, removed at exit;
#   * writes SIZE_MB of data as files of FILE_MB (one random source file, put under several
#     names) with `quarry put`, checks `quarry fsck /` is HEALTHY, then waits one lease period
#     plus the RPC timeout, so that no lease may still be valid and repair measures copying,
#     not lease expiry;
#   * freezes the `quarry up` supervisor (SIGSTOP; it would restart the killed child after
#     2 s) and `kill -9`s chunkserver-1;
#   * polls `quarry status --json` every 0.2 s: t_dead = when the master first shows the server
#     DOWN; t_done = when no chunk is under-replicated or missing, the re-replication queue is
#     empty and no clone is in flight. The repair rate is the bytes the clones copied (the
#     master's `cloned_bytes`, before vs after) over t_done - t_dead;
#   * checks `quarry fsck /` is HEALTHY again and that every file reads back with the source's
#     sha256, then thaws and stops the cluster (SIGCONT, SIGTERM to the supervisor by PID).
#
# Environment knobs
#   SIZE_MB=3072          data written (MiB)
#   FILE_MB=1024          size of each file (MiB)
#   CLONE_BW=             --clone-bandwidth for the master (bytes/s per clone; default 64 MiB/s)
#   MAX_CLONES=           --max-concurrent-clones (default 8)
#   QUARRY_BIN=PATH       use this binary instead of building
#   KEEP_TMP=1            keep the temp dir
set -euo pipefail
export LC_ALL=C

SIZE_MB=${SIZE_MB:-3072}
FILE_MB=${FILE_MB:-1024}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
LEASE_MS=60000
RPC_TIMEOUT_MS=10000

log() { echo "[rerepl] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}
now() { date +%s.%N; }

if [[ -z ${QUARRY_BIN:-} ]]; then
  log "building the release binary"
  (cd "$REPO" && cargo build --release -p quarry >&2)
  QUARRY_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/quarry
fi
[[ -x $QUARRY_BIN ]] || die "no quarry binary at $QUARRY_BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/quarry-rerepl.XXXXXX")
UP_PID=
cleanup() {
  if [[ -n $UP_PID ]] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -CONT "$UP_PID" 2>/dev/null || true
    kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
  if [[ -z ${KEEP_TMP:-} ]]; then rm -rf "$TMP"; else log "kept $TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cp "$QUARRY_BIN" "$TMP/quarry"
Q=$TMP/quarry
DATA=$TMP/qdata
export QUARRY_CLUSTER=$DATA/cluster.toml

EXTRA=()
[[ -n ${CLONE_BW:-} ]] && EXTRA+=("--clone-bandwidth=$CLONE_BW")
[[ -n ${MAX_CLONES:-} ]] && EXTRA+=("--max-concurrent-clones=$MAX_CLONES")
UP_CMD=("$Q" up --data "$DATA" --chunkservers 4 --processes "${EXTRA[@]}")
log "starting: ${UP_CMD[*]}"
"${UP_CMD[@]}" >"$TMP/up.log" 2>&1 &
UP_PID=$!

status_json() { "$Q" status --json 2>/dev/null; }
# A top-level field of the status reply on stdin.
field() { python3 -c "import json,sys; s=json.load(sys.stdin); print(s['$1'])"; }
alive_count() {
  python3 -c "import json,sys; s=json.load(sys.stdin); print(sum(c['alive'] for c in s['chunkservers']))"
}

for _ in $(seq 1 300); do
  n=$(status_json | alive_count 2>/dev/null || echo 0)
  [[ $n == 4 ]] && break
  sleep 0.2
done
[[ ${n:-0} == 4 ]] || die "the cluster did not come up (see $TMP/up.log)"
log "cluster up: 4 chunkservers"

# ------------------------------------------------------------------ write
nfiles=$(((SIZE_MB + FILE_MB - 1) / FILE_MB))
log "writing $nfiles x $FILE_MB MiB"
head -c "$((FILE_MB * 1048576))" /dev/urandom >"$TMP/src"
want=$(sha256sum "$TMP/src" | cut -d' ' -f1)
"$Q" mkdir /bench
t0=$(now)
for i in $(seq 0 $((nfiles - 1))); do
  "$Q" put "$TMP/src" "/bench/f$i" >/dev/null
done
t1=$(now)
rm -f "$TMP/src"
write_s=$(echo "$t1 - $t0" | bc -l)
"$Q" fsck / >"$TMP/fsck-before.txt" || die "fsck before the kill: $(tail -1 "$TMP/fsck-before.txt")"
chunks=$(status_json | python3 -c "import json,sys; print(json.load(sys.stdin)['masters'][0]['chunks'])")
wait_s=$(((LEASE_MS + RPC_TIMEOUT_MS) / 1000 + 1))
log "wrote $((nfiles * FILE_MB)) MiB ($chunks chunks) in $(printf %.1f "$write_s") s; waiting ${wait_s} s for every lease to expire"
sleep "$wait_s"

# ------------------------------------------------------------------ kill
victim_pid=$(grep '^chunkserver-1:' "$DATA/pids" | cut -d: -f2)
victim_port=$(python3 -c "
import re,sys
t=open('$DATA/cluster.toml').read()
m=re.search(r'chunkserver_ports\s*=\s*\[([^\]]*)\]', t)
print([p.strip() for p in m.group(1).split(',')][1])")
victim_addr=127.0.0.1:$victim_port
before=$(status_json)
victim_chunks=$(echo "$before" | python3 -c "
import json,sys
s=json.load(sys.stdin)
print([c['chunks'] for c in s['chunkservers'] if c['addr']=='$victim_addr'][0])")
bytes_before=$(echo "$before" | field cloned_bytes)
clones_before=$(echo "$before" | field clones_done)
log "freezing the supervisor ($UP_PID) and kill -9 of chunkserver-1 (pid $victim_pid, $victim_addr, $victim_chunks chunks)"
kill -STOP "$UP_PID"
t_kill=$(now)
kill -9 "$victim_pid"

t_dead=
while :; do
  s=$(status_json) || {
    sleep 0.2
    continue
  }
  if echo "$s" | python3 -c "
import json,sys
s=json.load(sys.stdin)
sys.exit(0 if any(c['addr']=='$victim_addr' and not c['alive'] for c in s['chunkservers']) else 1)"; then
    t_dead=$(now)
    under_at_dead=$(echo "$s" | field under_replicated_chunks)
    break
  fi
  sleep 0.2
done
log "declared dead $(printf %.1f "$(echo "$t_dead - $t_kill" | bc -l)") s after the kill; $under_at_dead chunks under-replicated"

peak_in_flight=0
while :; do
  s=$(status_json) || {
    sleep 0.2
    continue
  }
  read -r under missing queue in_flight < <(echo "$s" | python3 -c "
import json,sys
s=json.load(sys.stdin)
print(s['under_replicated_chunks'], s['missing_chunks'], s['repair_queue'], s['clones_in_flight'])")
  ((in_flight > peak_in_flight)) && peak_in_flight=$in_flight
  if ((under == 0 && missing == 0 && queue == 0 && in_flight == 0)); then
    t_done=$(now)
    break
  fi
  sleep 0.2
done
after=$(status_json)
bytes=$(($(echo "$after" | field cloned_bytes) - bytes_before))
clones=$(($(echo "$after" | field clones_done) - clones_before))
failed=$(echo "$after" | field clones_failed)
repair_s=$(echo "$t_done - $t_dead" | bc -l)
mb_s=$(echo "$bytes / 1000000 / $repair_s" | bc -l)
mib_s=$(echo "$bytes / 1048576 / $repair_s" | bc -l)

"$Q" fsck / >"$TMP/fsck-after.txt" || die "fsck after repair: $(tail -1 "$TMP/fsck-after.txt")"
for i in $(seq 0 $((nfiles - 1))); do
  got=$("$Q" get "/bench/f$i" - | sha256sum | cut -d' ' -f1)
  [[ $got == "$want" ]] || die "/bench/f$i differs after repair"
done

knobs="SIZE_MB=$SIZE_MB FILE_MB=$FILE_MB"
[[ -n ${CLONE_BW:-} ]] && knobs+=" CLONE_BW=$CLONE_BW"
[[ -n ${MAX_CLONES:-} ]] && knobs+=" MAX_CLONES=$MAX_CLONES"
cat <<EOF

re-replication after kill -9 of 1 of 4 chunkservers
  command          $knobs bash bench/rerepl.sh
  cluster          quarry up --chunkservers 4 --processes ${EXTRA[*]}
  binary           $QUARRY_BIN (sha256 $(sha256sum "$Q" | cut -c1-16))
  machine          $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(date -u +%Y-%m-%dT%H:%M:%SZ)
  data             $((nfiles * FILE_MB)) MiB in $nfiles files, $chunks chunks of 64 MiB, 3 replicas
  write            $(printf %.1f "$write_s") s ($(printf %.0f "$(echo "$nfiles * $FILE_MB / $write_s" | bc -l)") MiB/s, quarry put)
  killed server    held $victim_chunks chunks; $under_at_dead under-replicated when declared dead
  declared dead    $(printf %.1f "$(echo "$t_dead - $t_kill" | bc -l)") s after the kill (heartbeat timeout 10 s)
  repair           $clones clones, $bytes bytes, $(printf %.1f "$repair_s") s from declared dead to fully replicated
  repair rate      $(printf %.1f "$mb_s") MB/s ($(printf %.1f "$mib_s") MiB/s); peak clones in flight $peak_in_flight; failed clones $failed
  fsck             $(tail -1 "$TMP/fsck-after.txt"); every file's sha256 matches
EOF
