#!/usr/bin/env bash
# Build Quarry, start an embedded loopback cluster (a master and 3 chunkservers over QUIC with
# mutual TLS) mounted at a directory, use it with ordinary shell tools, show where a file's
# chunks live, run a MapReduce word count over books copied into the mount (map tasks run on
# the chunkservers holding the chunks), and stop everything (unmounting first).
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

echo "== MapReduce: word count over books in the mount"
# The 8-book corpus of the shared benchmarks when its builder is here (8.8 MB of real text from
# Debian packages); otherwise the license texts every Debian system has.
corpus=${QUARRY_CORPUS:-/tmp/quarry-corpus}
maker=""
for d in "${QUARRY_BENCH_DIR:-}" "$PWD/../shared/bench" /work/shared/bench; do
    if [ -n "$d" ] && [ -f "$d/make-corpus.sh" ]; then maker=$d/make-corpus.sh; break; fi
done
if [ ! -d "$corpus/small" ] && [ -n "$maker" ]; then
    echo "(building the corpus with $maker)"
    bash "$maker" "$corpus" > "$work/corpus.log" 2>&1 || true
fi
mkdir -p "$mnt/books"
if [ -d "$corpus/small" ]; then
    cp "$corpus"/small/* "$mnt/books/"
else
    cp /usr/share/common-licenses/* "$mnt/books/"
fi
ls -l "$mnt/books"
"$bin" job wordcount "$mnt/books" "$mnt/wordcount" --wait
ls -l "$mnt/wordcount"
echo "the 10 most frequent words:"
cat "$mnt"/wordcount/part-* | sort -k2,2nr | sed -n 1,10p   # sed reads to the end: no SIGPIPE
if [ -f "$corpus/ref/small.txt" ] && [ -d "$corpus/small" ]; then
    if cat "$mnt"/wordcount/part-* | LC_ALL=C sort | cmp -s - <(LC_ALL=C sort "$corpus/ref/small.txt"); then
        echo "equal to the sequential reference count (ref/small.txt)"
    else
        echo "DIFFERENT from the sequential reference count"; exit 1
    fi
fi
"$bin" job list
