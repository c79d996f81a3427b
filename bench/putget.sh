#!/usr/bin/env bash
# bench/putget.sh — throughput of `quarry put` / `quarry get` of a 1 GiB file on the embedded
# loopback cluster, side by side in ONE run with a copy to local disk and with MooseFS
# (the Foundation issue's benchmark acceptance point; results go to bench/RESULTS.md).
#
# Usage (from the repository root, as root so that page caches can be dropped):
#
#     ROUNDS=3 bash bench/putget.sh
#     bash bench/putget.sh RAWFILE      # only reprint the table of an earlier run's raw lines
#
# What one run does
#   * builds `cargo build --release -p quarry` (target/release/quarry) unless QUARRY_BIN is set;
#   * writes one 1 GiB random file (head -c /dev/urandom) to a `mktemp -d` directory on local
#     disk and records its sha256; everything temporary lives under that directory and is
#     removed at exit (trap);
#   * starts `quarry up --data $TMP/qdata` (master + 3 chunkservers in one process, 64 MiB
#     chunks, 3 replicas) and MooseFS via ../shared/bench/moosefs-up.sh (1 master + 3
#     chunkservers, goal 3, FUSE mount at /tmp/mfs/mnt); if MooseFS cannot be installed or
#     started the run goes on and records "MooseFS unavailable: <reason>";
#   * ROUNDS rounds; in each round every target (order rotated per round, so drift of the
#     shared machine's load hits all targets alike) does, with all page caches dropped
#     (`sync; echo 3 > /proc/sys/vm/drop_caches`) before each operation:
#       write      local:   dd if=big of=$TMP/local-copy bs=1M conv=fsync
#                  quarry:  quarry put big /big-$i   (acknowledged after every replica fdatasync'd)
#                  moosefs: dd if=big of=/tmp/mfs/mnt/big-$i bs=1M conv=fsync
#                  "write-ack" = until the command returns; "write" = that plus a global `sync`,
#                  i.e. until the data is on disk everywhere (MooseFS chunkservers do not fsync
#                  when a client fsyncs: its ack means "in the chunkservers' page cache").
#       read       cold read to /dev/null: cat FILE / `quarry get /big-$i -`.
#       read-file  cold read into a local file that is fsync'd (what `quarry get` does):
#                  `quarry get /big-$i $TMP/out`, dd ... of=$TMP/out conv=fsync for the
#                  others; then sha256 of $TMP/out must equal the source's (untimed).
#     then the remote file is removed (quarry rm / rm).
#     The drop also empties the chunkservers' caches (their chunks are ordinary files on the
#     same disk); when drop_caches is not writable (not root) nothing is cold, which is noted.
#   * stops the Quarry cluster with SIGTERM to the `quarry up` process this script started
#     (by PID) and waits for it; stops MooseFS with moosefs-down.sh --wipe if this script
#     started it (a MooseFS already mounted at $MFS_ROOT/mnt is used and left running).
#   * CPU seconds per operation: of the client command (user+sys of its process tree: the
#     `quarry` process, or dd/cat whose sys time carries the kernel's FUSE/ext4 work) and of
#     the filesystem's daemons (utime+stime from /proc/PID/stat before/after: the `quarry up`
#     process; mfsmaster, 3 mfschunkserver and mfsmount from $MFS_ROOT/pids).
#   * prints a table (median MiB/s over rounds, min-max, ratio vs MooseFS and vs local disk,
#     CPU) and writes raw lines + the table to $OUT.
#
# Environment knobs
#   ROUNDS=3            rounds per target
#   SIZE_MB=1024        file size (MiB); 1 GiB is the acceptance figure
#   QUARRY_BIN=PATH     use this binary instead of building (it is copied into the temp dir
#                       first, so a concurrent rebuild cannot swap it mid-run)
#   QUARRY_REV=LABEL    what QUARRY_BIN was built from, for the results header
#   OUT=FILE            raw results (default ${TMPDIR:-/tmp}/quarry-putget.<date>.txt — outside
#                       the temp dir, so that it survives the cleanup)
#   TARGETS="local quarry moosefs"
#   NICE=0              nice level of `quarry up`, the client commands and (as MFS_NICE) of the
#                       MooseFS daemons and mfsmount, so that no side out-prioritises the other
#   MFS_ROOT=/tmp/mfs   passed to the MooseFS scripts
#   SHARED_BENCH=DIR    the shared measurement tools (default <repo>/../shared/bench)
#   KEEP_TMP=1          do not delete the temp dir (debugging)
#
# Raw line format (one per operation and round):
#   R TARGET OP round=N bytes=B wall_s=S mibps=M client_cpu_s=C fs_cpu_s=F [machine_busy_pct=P]
# (machine_busy_pct: all cores, everybody's work included, over the op (+ the global sync for write))
set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-3}
SIZE_MB=${SIZE_MB:-1024}
NICE=${NICE:-0}
TARGETS=${TARGETS:-"local quarry moosefs"}
MFS_ROOT=${MFS_ROOT:-/tmp/mfs}
export MFS_ROOT
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
SHARED=${SHARED_BENCH:-$(cd "$REPO/.." && pwd)/shared/bench}
OUT=${OUT:-${TMPDIR:-/tmp}/quarry-putget.$(date +%Y%m%dT%H%M%S).txt}
HZ=$(getconf CLK_TCK)
BYTES=$((SIZE_MB * 1048576))

log() { echo "[putget] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6g\", $* }"; }
has() { [[ " $TARGETS " == *" $1 "* ]]; }

# ------------------------------------------------------------------ table
# table RAWFILE [MOOSEFS_UNAVAILABLE_REASON] : markdown table from raw lines (medians over rounds)
table() {
  python3 - "$1" "${2:-}" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if not f or f[0] != "R":
        continue
    kv = dict(x.split("=", 1) for x in f[3:])
    rows.setdefault((f[1], f[2]), []).append(kv)

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def stats(target, op, fn):
    vs = [fn(r) for r in rows.get((target, op), [])]
    vs = [v for v in vs if v is not None]
    return (statistics.median(vs), min(vs), max(vs), len(vs)) if vs else None

def per_gib(r, *keys):
    vs = [num(r[k]) for k in keys]
    return None if None in vs else sum(vs) / (int(r["bytes"]) / 2**30)

ops = [("write", "write, fsync'd, + global sync (on disk)"),
       ("write-ack", "write, until the command returns"),
       ("read", "cold read -> /dev/null"),
       ("read-file", "cold read -> local file, fsync'd")]
targets = [t for t in ("local", "quarry", "moosefs") if any(k[0] == t for k in rows)]
print("| target | operation | MiB/s median (min-max, n) | vs MooseFS | vs local disk "
      "| CPU-s/GiB client + fs daemons = total (medians) |")
print("|---|---|---|---|---|---|")
for op, desc in ops:
    for t in targets:
        m = stats(t, op, lambda r: num(r["mibps"]))
        if not m:
            continue
        def ratio(other):
            o = stats(other, op, lambda r: num(r["mibps"]))
            return "%.2f" % (m[0] / o[0]) if o else "n/a"
        c = stats(t, op, lambda r: per_gib(r, "client_cpu_s"))
        fs = stats(t, op, lambda r: per_gib(r, "fs_cpu_s"))
        tot = stats(t, op, lambda r: per_gib(r, "client_cpu_s", "fs_cpu_s"))
        if t == "local":
            cpu = "%.1f" % c[0] if c else "-"
        elif c and fs and tot:
            cpu = "%.1f + %.1f = %.1f" % (c[0], fs[0], tot[0])
        else:
            cpu = ("%.1f + -" % c[0]) if c else "-"
        print("| %s | %s | %.0f (%.0f-%.0f, %d) | %s | %s | %s |"
              % (t, desc, m[0], m[1], m[2], m[3], ratio("moosefs"), ratio("local"), cpu))
if sys.argv[2]:
    print("\nMooseFS unavailable: " + sys.argv[2])
EOF
}
if [[ -n ${1:-} ]]; then table "$1"; exit 0; fi   # `putget.sh RAWFILE`: only reprint the table

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
TMP=$(mktemp -d "${TMPDIR:-/tmp}/quarry-putget.XXXXXX")
QPID=
MFS_STARTED=0
MFS_UNAVAILABLE=
cleanup() {
  local rc=$?
  set +e
  if [[ -n $QPID ]] && kill -0 "$QPID" 2>/dev/null; then
    log "stopping quarry up (pid $QPID)"
    kill -TERM "$QPID"
    for _ in $(seq 1 150); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$QPID" 2>/dev/null && { log "quarry up did not stop in 30 s; SIGKILL"; kill -KILL "$QPID"; }
    wait "$QPID" 2>/dev/null
  fi
  if [[ $MFS_STARTED == 1 ]]; then
    bash "$SHARED/moosefs-down.sh" --wipe 2>>"$TMP/moosefs-down.log" \
      || log "moosefs-down.sh failed (see output above)"
  fi
  if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private copy of the binary: a concurrent `cargo build` in a shared target dir must not swap
# the client binary in the middle of a run.
cp "$QUARRY_BIN" "$TMP/quarry"
QUARRY_SRC=$(readlink -f "$QUARRY_BIN")
QUARRY_BIN=$TMP/quarry

CAN_DROP=0
[[ -w /proc/sys/vm/drop_caches ]] && CAN_DROP=1
drop_caches() { sync; if [[ $CAN_DROP == 1 ]]; then echo 3 > /proc/sys/vm/drop_caches; fi; }

# utime+stime (ticks) summed over the given PIDs (0 for a PID that is gone)
ticks() {
  local s=0 p t
  for p in "$@"; do
    t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    s=$((s + ${t:-0}))
  done
  echo "$s"
}
# machine-wide "busy idle+busy" jiffies (all CPUs; other users' work included)
busy() { awk '/^cpu / { idle = $5 + $6; t = 0; for (i = 2; i <= NF; i++) t += $i; print t - idle, t }' /proc/stat; }
MFS_PIDS=()
fs_pids() { # target -> daemon PIDs
  case $1 in
    quarry) echo "$QPID" ;;
    moosefs) echo "${MFS_PIDS[*]}" ;;
    *) echo ;;
  esac
}

# ------------------------------------------------------------------ header
{
  echo "# putget date=$(date -u +%FT%TZ) host=$(hostname) kernel=$(uname -r) nproc=$(nproc)" \
       "load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /) rounds=$ROUNDS size_mb=$SIZE_MB nice=$NICE"
  echo "# quarry=$QUARRY_SRC sha256=$(sha256sum < "$QUARRY_BIN" | cut -c1-16) rev=$QUARRY_REV"
  echo "# tmp=$TMP fstype=$(stat -f -c %T "$TMP") device=$(df --output=source "$TMP" | tail -1)"
  echo "# caches_droppable=$CAN_DROP targets=$TARGETS"
} > "$OUT"
[[ $CAN_DROP == 1 ]] || log "WARNING: cannot drop caches (not root?): reads are NOT cold"

# ------------------------------------------------------------------ the source file
BIG=$TMP/big
log "writing the ${SIZE_MB} MiB random source file"
head -c "$BYTES" /dev/urandom > "$BIG"
WANT=$(sha256sum < "$BIG" | cut -d' ' -f1)
echo "# source=$BIG bytes=$BYTES sha256=$WANT" >> "$OUT"

# ------------------------------------------------------------------ Quarry cluster
export QUARRY_CLUSTER=$TMP/qdata/cluster.toml
if has quarry; then
  log "starting quarry up --data $TMP/qdata"
  nice -n "$NICE" "$QUARRY_BIN" up --data "$TMP/qdata" > "$TMP/quarry-up.log" 2>&1 &
  QPID=$!
  alive=0; deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    kill -0 "$QPID" 2>/dev/null || { cat "$TMP/quarry-up.log" >&2; die "quarry up exited"; }
    if [[ -s $QUARRY_CLUSTER ]]; then
      alive=$(timeout 5 "$QUARRY_BIN" status --json 2>/dev/null | python3 -c '
import json, sys
print(sum(1 for c in json.load(sys.stdin)["chunkservers"] if c["alive"]))' 2>/dev/null || echo 0)
      [[ $alive -ge 3 ]] && break
    fi
    sleep 0.2
  done
  [[ $alive -ge 3 ]] || { cat "$TMP/quarry-up.log" >&2; die "only $alive chunkservers alive after 30 s"; }
  log "quarry up: pid $QPID, $alive chunkservers alive"
  echo "# quarry_up pid=$QPID chunkservers_alive=$alive $(timeout 5 "$QUARRY_BIN" status --json \
        | python3 -c 'import json,sys; s=json.load(sys.stdin); print("chunk_size=%d replication=%d" % (s["chunk_size"], s["replication"]))')" >> "$OUT"
fi

# ------------------------------------------------------------------ MooseFS
MNT=$MFS_ROOT/mnt
if has moosefs; then
  if ! command -v mfsmaster >/dev/null || ! command -v mfsmount >/dev/null; then
    log "installing MooseFS from apt"
    if ! apt-get install -y moosefs-master moosefs-chunkserver moosefs-client moosefs-cli \
         > "$TMP/apt.log" 2>&1; then
      MFS_UNAVAILABLE="apt-get install failed: $(tail -1 "$TMP/apt.log")"
    fi
  fi
  if [[ -z $MFS_UNAVAILABLE ]]; then
    if mountpoint -q "$MNT"; then
      log "MooseFS already mounted at $MNT: using it, leaving it running"
    else
      MFS_STARTED=1
      if ! MFS_NICE=$NICE bash "$SHARED/moosefs-up.sh" 2> "$TMP/moosefs-up.log"; then
        MFS_UNAVAILABLE="moosefs-up.sh failed: $(tail -1 "$TMP/moosefs-up.log")"
      fi
    fi
  fi
  if [[ -z $MFS_UNAVAILABLE ]]; then
    [[ -r $MFS_ROOT/pids ]] && while IFS=: read -r _ p; do
      [[ -n $p ]] && MFS_PIDS+=("$p")
    done < "$MFS_ROOT/pids"
    echo "# moosefs mount=$MNT goal=$(mfsgetgoal "$MNT" 2>/dev/null | awk '{print $NF}') pids=$(tr '\n' ' ' < "$MFS_ROOT/pids" 2>/dev/null)" >> "$OUT"
  else
    log "MooseFS unavailable: $MFS_UNAVAILABLE"
    echo "# MooseFS unavailable: $MFS_UNAVAILABLE" >> "$OUT"
  fi
fi

# ------------------------------------------------------------------ measuring
# measure TARGET OP ROUND CMD : drop caches, run CMD (bash -c) timed, record one raw line.
# For OP=write also times a global `sync` afterwards and records write-ack and write.
measure() {
  local target=$1 op=$2 round=$3 cmd=$4 tf=$TMP/.time
  local pids f0 f1 t0 t1 t2 r u s
  read -r -a pids <<< "$(fs_pids "$target")"
  drop_caches
  f0=$(ticks "${pids[@]}")
  local b0 a0 b1 a1; read -r b0 a0 < <(busy)
  t0=$(now)
  if ! { TIMEFORMAT='%3R %3U %3S'; time bash -c "$cmd" 2>&3; } 3>&2 2> "$tf"; then
    log "$target $op round $round FAILED: $cmd"
    echo "R $target $op round=$round bytes=$BYTES wall_s=NA mibps=NA client_cpu_s=NA fs_cpu_s=NA" >> "$OUT"
    return 1
  fi
  t1=$(now)
  local fm; fm=$(ticks "${pids[@]}")
  if [[ $op == write ]]; then sync; fi
  t2=$(now)
  f1=$(ticks "${pids[@]}")
  read -r b1 a1 < <(busy)
  read -r r u s < <(tail -1 "$tf")
  local cpu fs
  cpu=$(calc "$u + $s"); fs=$(calc "($f1 - $f0) / $HZ")
  if [[ $op == write ]]; then
    echo "R $target write-ack round=$round bytes=$BYTES wall_s=$(calc "$t1 - $t0") mibps=$(calc "$BYTES / 1048576 / ($t1 - $t0)") client_cpu_s=$cpu fs_cpu_s=$(calc "($fm - $f0) / $HZ")" >> "$OUT"
  fi
  echo "R $target $op round=$round bytes=$BYTES wall_s=$(calc "$t2 - $t0") mibps=$(calc "$BYTES / 1048576 / ($t2 - $t0)") client_cpu_s=$cpu fs_cpu_s=$fs machine_busy_pct=$(calc "100 * ($b1 - $b0) / ($a1 - $a0)")" >> "$OUT"
  log "$target $op round $round: $(calc "$BYTES / 1048576 / ($t2 - $t0)") MiB/s ($(calc "$t2 - $t0") s, client cpu ${cpu}s, fs cpu ${fs}s)"
}

verify() { # target round file
  local got
  got=$(sha256sum < "$3" | cut -d' ' -f1)
  if [[ $got == "$WANT" ]]; then
    echo "# $1 round=$2 sha256_ok=1" >> "$OUT"
  else
    echo "# $1 round=$2 sha256_ok=0 got=$got" >> "$OUT"
    die "$1 round $2: sha256 mismatch ($got != $WANT)"
  fi
  rm -f "$3"
}

N="nice -n $NICE"
run_local() {
  local i=$1 dst=$TMP/local-copy
  measure local write "$i" "$N dd if='$BIG' of='$dst' bs=1M conv=fsync status=none"
  measure local read "$i" "$N cat '$dst' > /dev/null"
  measure local read-file "$i" "$N dd if='$dst' of='$TMP/out' bs=1M conv=fsync status=none"
  verify local "$i" "$TMP/out"
  rm -f "$dst"
}
run_quarry() {
  local i=$1
  measure quarry write "$i" "$N '$QUARRY_BIN' put '$BIG' /big-$i"
  measure quarry read "$i" "$N '$QUARRY_BIN' get /big-$i - > /dev/null"
  measure quarry read-file "$i" "$N '$QUARRY_BIN' get /big-$i '$TMP/out'"
  verify quarry "$i" "$TMP/out"
  "$QUARRY_BIN" rm "/big-$i"
}
run_moosefs() {
  local i=$1 dst=$MNT/big-$i
  measure moosefs write "$i" "$N dd if='$BIG' of='$dst' bs=1M conv=fsync status=none"
  measure moosefs read "$i" "$N cat '$dst' > /dev/null"
  measure moosefs read-file "$i" "$N dd if='$dst' of='$TMP/out' bs=1M conv=fsync status=none"
  verify moosefs "$i" "$TMP/out"
  rm -f "$dst"
}

read -r -a order <<< "$TARGETS"
[[ -n $MFS_UNAVAILABLE ]] && read -r -a order <<< "${TARGETS/moosefs/}"
for ((i = 1; i <= ROUNDS; i++)); do
  n=${#order[@]}
  for ((k = 0; k < n; k++)); do
    t=${order[$(((k + i - 1) % n))]}
    log "round $i: $t (load $(cut -d' ' -f1 /proc/loadavg))"
    echo "# round=$i target=$t load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)" >> "$OUT"
    "run_$t" "$i"
  done
done

# ------------------------------------------------------------------ stop the Quarry cluster
if [[ -n $QPID ]]; then
  echo "# quarry_up total_cpu_s=$(calc "$(ticks "$QPID") / $HZ")" >> "$OUT"
  log "stopping quarry up (pid $QPID)"
  kill -TERM "$QPID"
  if wait "$QPID"; then echo "# quarry_up stopped rc=0" >> "$OUT"
  else echo "# quarry_up stopped rc=$?" >> "$OUT"; fi
  QPID=
fi

# ------------------------------------------------------------------ table
table "$OUT" "$MFS_UNAVAILABLE" | tee -a "$OUT"
log "raw results: $OUT"
