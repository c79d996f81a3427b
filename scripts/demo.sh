#!/usr/bin/env bash
# Build Quarry, start an embedded loopback cluster (a master and 3 chunkservers over QUIC with
# mutual TLS), copy a file in and out, show where its chunks live, and stop the cluster.
# Usage: bash scripts/demo.sh [DATA_DIR]   (default: a fresh temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p quarry
bin=$PWD/target/release/quarry
work=$(mktemp -d)
data=${1:-$work/quarry-data}
up_pid=
cleanup() {
    if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
        kill -TERM "$up_pid"
        wait "$up_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" up --data "$data" > "$work/up.log" 2>&1 &
up_pid=$!
export QUARRY_CLUSTER=$data/cluster.toml
# Wait for the cluster file, then for three live chunkservers.
for _ in $(seq 1 300); do
    if [ -f "$QUARRY_CLUSTER" ] && "$bin" status --json 2>/dev/null | grep -c '"alive": true' | grep -qx 3; then
        break
    fi
    kill -0 "$up_pid" || { cat "$work/up.log"; exit 1; }
    sleep 0.1
done
cat "$work/up.log"

echo "== a 100 MiB file in and out"
head -c 100M /dev/urandom > "$work/file"
"$bin" mkdir -p /demo
time "$bin" put "$work/file" /demo/file
time "$bin" get /demo/file "$work/back"
cmp "$work/file" "$work/back" && echo "identical: $(sha256sum < "$work/back" | cut -c1-16)..."
echo "== ls -l /demo"
"$bin" ls -l /demo
echo "== stat /demo/file"
"$bin" stat /demo/file
echo "== status"
"$bin" status
