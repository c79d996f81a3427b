#!/usr/bin/env bash
# bench/ab-mount.sh A_BIN B_BIN — two builds of quarry side by side through the mount: each
# round starts `quarry up --mount` with one binary, runs `quarry bench --mount` (big-file
# write with fsync, then a cold read; optionally metadata), stops it, then the same with the
# other binary, alternating which goes first. Prints the median of each phase per binary and
# the ratio B / A. Run as root (caches are dropped before the read).
#
#     bash bench/ab-mount.sh /tmp/quarry-base /tmp/quarry-new
#     ROUNDS=3 BIG_MIB=1024 ONLY=write,read bash bench/ab-mount.sh OLD NEW
#
# Environment: ROUNDS=2 BIG_MIB=512 FILES=500 ONLY=write,read OUT=DIR
set -euo pipefail
export LC_ALL=C
A=${1:?usage: ab-mount.sh A_BIN B_BIN}
B=${2:?usage: ab-mount.sh A_BIN B_BIN}
ROUNDS=${ROUNDS:-2}
BIG_MIB=${BIG_MIB:-512}
FILES=${FILES:-500}
ONLY=${ONLY:-write,read}
OUT=${OUT:-${TMPDIR:-/tmp}/quarry-ab.$(date +%Y%m%dT%H%M%S)}
log() { echo "[ab-mount] $*" >&2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/quarry-ab.XXXXXX")
mkdir -p "$OUT"
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/quarry-up.sh"
stop() {
  quarry_up_stop "$TMP/mnt"
  rm -rf "$TMP/data"
}
trap 'stop; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

cp "$A" "$TMP/quarry-A"
cp "$B" "$TMP/quarry-B"
: > "$OUT/results.jsonl"
run_one() { # label
  local bin=$TMP/quarry-$1
  quarry_up_start "$bin" "$TMP/data" "$TMP/mnt" "$TMP/up-$1.log" || exit 1
  "$bin" bench --mount "$TMP/mnt" --clients 1 --big-mib "$BIG_MIB" --files "$FILES" \
    --only "$ONLY" --json | sed "s/^{/{\"bin\":\"$1\",/" >> "$OUT/results.jsonl"
  stop
}
echo "# A=$A B=$B ROUNDS=$ROUNDS BIG_MIB=$BIG_MIB ONLY=$ONLY $(date -u +%FT%TZ) $(uptime)" | tee "$OUT/context.txt" >&2
for r in $(seq 1 "$ROUNDS"); do
  if ((r % 2)); then order="A B"; else order="B A"; fi
  for x in $order; do log "round $r: $x"; run_one "$x"; done
done
python3 - "$OUT/results.jsonl" <<'EOF' | tee "$OUT/ab.md"
import json, statistics, sys
runs, units = {}, {}
for line in open(sys.argv[1]):
    o = json.loads(line)
    runs.setdefault((o["phase"], o["bin"]), []).append(o["rate"])
    units[o["phase"]] = o["unit"]
phases = sorted({p for p, _ in runs}, key=["write", "read", "create", "stat", "rename", "unlink"].index)
print("| phase | unit | A | B | B / A | runs A | runs B |")
print("|---|---|---|---|---|---|---|")
for p in phases:
    a, b = runs.get((p, "A"), []), runs.get((p, "B"), [])
    ma, mb = statistics.median(a), statistics.median(b)
    print("| %s | %s | %.1f | %.1f | %.2f | %s | %s |" % (p, units[p], ma, mb, mb / ma,
          ",".join("%.1f" % x for x in a), ",".join("%.1f" % x for x in b)))
EOF
