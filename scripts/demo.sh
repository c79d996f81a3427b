#!/usr/bin/env bash
# Build Quarry, start an embedded loopback cluster (a master and 3 chunkservers over QUIC with
# mutual TLS) mounted at a directory, use it with ordinary shell tools, show where a file's
# chunks live, and stop everything (unmounting first).
# Usage: bash scripts/demo.sh [DATA_DIR]   (default: a fresh temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p quarry
bin=$PWD/target/release/quarry
work=$(mktemp -d)
data=${1:-$work/quarry-data}
mnt=$work/mnt
mkdir -p "$mnt"
up_pid=
cleanup() {
    if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
        kill -TERM "$up_pid"     # quarry up unmounts, then stops the nodes
        wait "$up_pid" || true
    fi
    if grep -q " $mnt " /proc/mounts; then fusermount3 -u "$mnt" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" up --data "$data" --mount "$mnt" > "$work/up.log" 2>&1 &
up_pid=$!
export QUARRY_CLUSTER=$data/cluster.toml
for _ in $(seq 1 300); do
    grep -q " $mnt " /proc/mounts && break
    kill -0 "$up_pid" || { cat "$work/up.log"; exit 1; }
    sleep 0.1
done
grep -q " $mnt " /proc/mounts || { echo "the mount did not appear"; cat "$work/up.log"; exit 1; }
cat "$work/up.log"

echo "== shell tools in $mnt"
mkdir -p "$mnt/docs"
cp -r README.md ARCHITECTURE.md docs "$mnt/docs/"
ls -l "$mnt/docs"
echo "words in the docs, counted through the mount: $(cat "$mnt"/docs/*.md "$mnt"/docs/docs/*.md | wc -w)"
grep -rl "checksum" "$mnt/docs" | sed "s|$mnt||"
echo "== a 100 MiB file"
head -c 100M /dev/urandom > "$work/file"
time cp "$work/file" "$mnt/file"
cmp "$work/file" "$mnt/file" && echo "identical after a round trip"
"$bin" stat /file
echo "== status"
"$bin" status
