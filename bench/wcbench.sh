#!/usr/bin/env bash
# bench/wcbench.sh — `quarry job wordcount` on the 1 GB corpus, side by side in ONE run with the
# word-count peers of ../shared/bench/wcbench.sh (tight Rust reference on 1 and 2 threads,
# PySpark local[2], Dask, Python, coreutils). The MapReduce issue's benchmark; results go to
# bench/RESULTS.md.
#
# Usage (from the repository root):
#
#     RUNS=3 bash bench/wcbench.sh
#     PEERS=rust-2t,ours RUNS=3 bash bench/wcbench.sh     # a subset of peers
#
# What one run does
#   * builds `cargo build --release -p quarry` unless QUARRY_BIN is set (the binary is copied
#     into the temp dir so a concurrent rebuild cannot swap it);
#   * builds the corpus with ../shared/bench/make-corpus.sh into $CORPUS (default
#     /tmp/quarry-corpus) unless it is there: large/ = 10 files, 1.09 GB of real text;
#   * starts `quarry up` (master + 3 chunkservers in one process, 64 MiB chunks, 3 replicas)
#     mounted at a temp dir, and copies large/ into it once (untimed: the data lives in the
#     filesystem before the job, as it does for a user of a distributed filesystem);
#   * runs ../shared/bench/wcbench.sh with the peer "ours" =
#       quarry job wordcount MNT/large MNT/wc-N --wait, then cat MNT/wc-N/part-* > OUT
#     so the timed work is the whole job (plan, maps on the chunkservers holding the chunks,
#     shuffle over QUIC, reduces, replicated output) plus reading the output back. The peers
#     read large/ from the local page cache (warm). Each output is checked against the
#     reference ("exact" in the check column).
#   * cpu% of "ours" in wcbench's table counts the CLI only; this script adds the CPU seconds
#     of the `quarry up` process (all nodes) per run from /proc/PID/stat.
#   * stops the cluster (SIGTERM to the `quarry up` it started, which unmounts first) and
#     removes the temp dir.
#
# Environment knobs
#   RUNS=3                 runs per peer (odd; the median is reported)
#   PEERS=...              default: rust-1t,rust-2t,gnu-tr-awk,python-counter,dask-procs,spark-df,ours
#   QUARRY_BIN=PATH        use this binary
#   CORPUS=DIR             corpus directory (large/ and ref/)
#   REDUCERS=3             reduce tasks
#   PY=PATH                python with dask + pyspark (default /tmp/wcvenv/bin/python; see
#                          ../shared/bench/README.md to create it)
#   SHARED_BENCH=DIR       the shared tools (default <repo>/../shared/bench, else /work/shared/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
[[ -d $SHARED_BENCH ]] || SHARED_BENCH=/work/shared/bench
RUNS=${RUNS:-3}
PEERS=${PEERS:-rust-1t,rust-2t,gnu-tr-awk,python-counter,dask-procs,spark-df}
REDUCERS=${REDUCERS:-3}
CORPUS=${CORPUS:-/tmp/quarry-corpus}

TMP=$(mktemp -d)
up_pid=
cleanup() {
    if [[ -n $up_pid ]] && kill -0 "$up_pid" 2>/dev/null; then
        kill -TERM "$up_pid"
        wait "$up_pid" || true
    fi
    if grep -q " $TMP/mnt " /proc/mounts; then fusermount3 -u "$TMP/mnt" || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

if [[ -z ${QUARRY_BIN:-} ]]; then
    cargo build --release -q -p quarry
    QUARRY_BIN=$ROOT/target/release/quarry
fi
cp "$QUARRY_BIN" "$TMP/quarry"
BIN=$TMP/quarry
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

if [[ ! -f $CORPUS/ref/large.txt || ! -d $CORPUS/large ]]; then
    bash "$SHARED_BENCH/make-corpus.sh" "$CORPUS" > "$TMP/corpus.log"
fi

mkdir -p "$TMP/mnt"
"$BIN" up --data "$TMP/qdata" --mount "$TMP/mnt" > "$TMP/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 300); do
    grep -q " $TMP/mnt " /proc/mounts && break
    kill -0 "$up_pid" || { cat "$TMP/up.log"; exit 1; }
    sleep 0.1
done
export QUARRY_CLUSTER=$TMP/qdata/cluster.toml
echo "# loading $CORPUS/large into the filesystem (untimed)"
cp -r "$CORPUS/large" "$TMP/mnt/large"

cat > "$TMP/ours.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
out=wc-\$(date +%s%N)
"$BIN" job wordcount "$TMP/mnt/large" "$TMP/mnt/\$out" --reducers $REDUCERS --wait > /dev/null
cat "$TMP/mnt/\$out"/part-* > "\$1"
EOF
chmod +x "$TMP/ours.sh"

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
before=$(cpu_of "$up_pid")
echo "# quarry $REV, $REDUCERS reducers, cluster: quarry up (1 master + 3 chunkservers, one process), 64 MiB chunks, 3 replicas"
REF=$CORPUS/ref/large.txt OURS_CMD="$TMP/ours.sh {OUT}" \
    bash "$SHARED_BENCH/wcbench.sh" -r "$RUNS" -p "$PEERS" -w "$TMP/wcbench" "$CORPUS/large"
after=$(cpu_of "$up_pid")
echo "# quarry up process CPU over all $RUNS runs of ours: $(( (after - before) / TCK )) s ($(( (after - before) / TCK / RUNS )) s per run)"
