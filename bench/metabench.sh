#!/usr/bin/env bash
# bench/metabench.sh — metadata throughput of the master through the client library:
# creates/s, stats/s (lookup), renames/s and unlinks/s with 1 and 16 concurrent clients, on a
# 3-master Raft group and on the single-master mode, side by side in ONE run (issue #4).
#
# Usage (from the repository root):
#
#     ROUNDS=3 bash bench/metabench.sh
#
# What one run does
#   * builds `cargo build --release -p quarry` (target/release/quarry) unless QUARRY_BIN is set,
#     and copies the binary into a `mktemp -d` directory (a rebuild cannot swap it mid-run);
#   * starts two loopback clusters at once, each `quarry up --chunkservers 3` in its own data
#     directory under that temp directory: one with `--masters 1` (one master, its own fsynced
#     operation log) and one with `--masters 3` (a Raft group: every mutation is committed on a
#     majority, each log write fsynced); waits until `quarry status` answers on each;
#   * ROUNDS rounds; in each, for clients in 1 16 and each cluster (order rotated per round, so
#     drift of the shared machine's load hits both alike):
#         quarry --cluster C bench --only create,stat,rename,unlink --clients N --files F --json
#     with F = FILES_1 (default 2000) files for 1 client and FILES_16 (default 250) per client
#     for 16 clients (4000 operations per phase). Each client has its own QUIC connection and
#     session; each operation is one acknowledged RPC (mutations durable on the master's log —
#     on a majority's for the Raft group — before the reply).
#   * prints a table of medians over rounds (ops/s, and the ratio 3 masters / 1 master) and
#     writes the raw JSON lines and the table to $OUT (default bench/metabench-<date>.txt);
#   * stops both clusters with SIGTERM to the `quarry up` processes it started (by PID) and
#     removes the temp directory.
#
# Environment knobs: ROUNDS=3 FILES_1=2000 FILES_16=250 QUARRY_BIN=PATH OUT=PATH
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
FILES_1=${FILES_1:-2000}
FILES_16=${FILES_16:-250}
OUT=${OUT:-bench/metabench-$(date +%Y%m%d-%H%M%S).txt}

if [ -z "${QUARRY_BIN:-}" ]; then
    cargo build --release -p quarry --quiet
    QUARRY_BIN=target/release/quarry
fi
TMP=$(mktemp -d /tmp/quarry-metabench.XXXXXX)
cp "$QUARRY_BIN" "$TMP/quarry"
Q=$TMP/quarry
PIDS=()
cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 150); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p"
        wait "$p" 2>/dev/null
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for m in 1 3; do
    "$Q" up --data "$TMP/m$m" --masters "$m" --chunkservers 3 >"$TMP/up-$m.log" 2>&1 &
    PIDS+=($!)
done
for m in 1 3; do
    ok=0
    for _ in $(seq 1 300); do
        if [ -f "$TMP/m$m/cluster.toml" ] &&
            "$Q" --cluster "$TMP/m$m/cluster.toml" status >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 0.2
    done
    if [ "$ok" != 1 ]; then
        echo "metabench: the ${m}-master cluster did not come up; it said:" >&2
        cat "$TMP/up-$m.log" >&2
        exit 1
    fi
done

RAW=$TMP/raw.jsonl
: >"$RAW"
configs=("1 1" "3 1" "1 16" "3 16")
for round in $(seq 1 "$ROUNDS"); do
    n=${#configs[@]}
    for k in $(seq 0 $((n - 1))); do
        cfg=${configs[$(((k + round - 1) % n))]}
        read -r m clients <<<"$cfg"
        files=$FILES_1
        [ "$clients" = 16 ] && files=$FILES_16
        echo "metabench: round $round, $m master(s), $clients client(s)" >&2
        "$Q" --cluster "$TMP/m$m/cluster.toml" bench --only create,stat,rename,unlink \
            --clients "$clients" --files "$files" --json |
            sed "s/^{/{\"masters\":$m,\"round\":$round,/" >>"$RAW"
    done
done

{
    echo "# bench/metabench.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, ROUNDS=$ROUNDS FILES_1=$FILES_1 FILES_16=$FILES_16"
    echo "# quarry $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    python3 - "$RAW" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {}
for key in {(r["phase"], r["clients"], r["masters"]) for r in rows}:
    vals = [r for r in rows if (r["phase"], r["clients"], r["masters"]) == key]
    med[key] = (statistics.median(v["rate"] for v in vals),
                statistics.median(v["p50_us"] for v in vals),
                statistics.median(v["p99_us"] for v in vals),
                ",".join(f'{v["rate"]:.0f}' for v in sorted(vals, key=lambda v: v["round"])))
print(f'| phase  | clients | 1 master ops/s (p50/p99 ms) | 3 masters ops/s (p50/p99 ms) | 3 / 1 |')
print(f'|--------|--------:|----------------------------:|-----------------------------:|------:|')
for phase in ["create", "stat", "rename", "unlink"]:
    for clients in [1, 16]:
        a, b = med.get((phase, clients, 1)), med.get((phase, clients, 3))
        if not a or not b:
            continue
        print(f'| {phase:<6} | {clients:>7} | {a[0]:>8.0f} ({a[1]/1e3:.2f}/{a[2]/1e3:.2f}) | '
              f'{b[0]:>8.0f} ({b[1]/1e3:.2f}/{b[2]/1e3:.2f}) | {b[0]/a[0]:.2f} |')
print()
print("runs (ops/s per round):")
for k in sorted(med):
    print(f"  {k[0]:<6} clients={k[1]:<2} masters={k[2]}: {med[k][3]}")
EOF
    echo
    echo "# raw"
    cat "$RAW"
} | tee "$OUT"
