#!/usr/bin/env bash
# POSIX conformance of the FUSE mount: pjdfstest 0.2.2 and fsx 0.3.2 (both from crates.io,
# installed with `cargo install` when missing) against a fresh `quarry up --mount` on a
# temporary directory. Needs root (pjdfstest switches users) and /dev/fuse; without them it
# skips, except under CI (CI=true), where that is a failure.
#
# The last line is `posix: N passed, N failed` (pjdfstest's test cases plus one test per fsx
# seed). Exits non-zero if a test fails that is not in EXPECTED_FAILURES below. The mount is
# unmounted and the cluster stopped on every exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"

PJDFSTEST_VERSION=0.2.2
FSX_VERSION=0.3.2
FSX_OPS=${POSIX_FSX_OPS:-10000}
FSX_SEEDS=(1 2 3)

# Tests allowed to fail, each `name|reason` (pjdfstest test names, or fsx::seed-N).
EXPECTED_FAILURES=(
)

skip() {
    if [ "${CI:-}" = "true" ]; then
        echo "posix: $1 (required under CI)" >&2
        exit 1
    fi
    echo "posix: skipped: $1" >&2
    exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root (pjdfstest switches users)"
[ -e /dev/fuse ] || skip "/dev/fuse is missing (run scripts/setup.sh)"

install_tool() { # binary version
    if ! "$1" --version 2>/dev/null | grep -q " $2\$"; then
        echo "posix: installing $1 $2" >&2
        cargo install "$1" --version "$2" --locked --quiet
    fi
}
install_tool pjdfstest "$PJDFSTEST_VERSION"
install_tool fsx "$FSX_VERSION"

# pjdfstest's dummy users: nobody/nogroup exist on Debian; `tests` is created once.
if ! id tests >/dev/null 2>&1; then
    useradd -U -M -s /usr/sbin/nologin tests
fi

QUARRY=$ROOT/target/debug/quarry
if [ ! -x "$QUARRY" ]; then
    cargo build -p quarry --quiet
fi

WORK=$(mktemp -d /tmp/quarry-posix.XXXXXX)
# pjdfstest runs some cases as other users: they must reach the mount.
chmod 755 "$WORK"
MNT=$WORK/mnt
UP_PID=""

is_mounted() { awk -v d="$MNT" '$2 == d { found = 1 } END { exit !found }' /proc/mounts; }

cleanup() {
    local rc=$?
    set +e
    if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
        # SIGTERM: `quarry up` unmounts (lazily if busy), then stops the cluster.
        kill -TERM "$UP_PID"
        for _ in $(seq 1 100); do
            kill -0 "$UP_PID" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$UP_PID" 2>/dev/null; then
            echo "posix: quarry up did not stop; killing it" >&2
            kill -KILL "$UP_PID"
        fi
        wait "$UP_PID" 2>/dev/null
    fi
    if is_mounted; then
        fusermount3 -u -z "$MNT" 2>/dev/null || fusermount3 -u "$MNT"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$MNT" "$WORK/secondary" "$WORK/fsx-artifacts"
"$QUARRY" up --data "$WORK/data" --mount "$MNT" >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1 150); do
    is_mounted && break
    kill -0 "$UP_PID" 2>/dev/null || break
    sleep 0.2
done
if ! is_mounted; then
    echo "posix: the mount did not appear within 30 s; quarry up said:" >&2
    cat "$WORK/up.log" >&2
    exit 1
fi

# pjdfstest. Features Quarry has: utimensat and UTIME_NOW, ctime on rename, posix_fallocate (a
# sparse extension). Skipped by design: chflags, NFSv4 ACLs, birthtime, the EROFS tests (no
# remounts) and LINK_MAX (pathconf cannot know a FUSE filesystem's limit).
cat >"$WORK/pjdfstest.toml" <<'EOF'
[features]
utime_now = {}
utimensat = {}
rename_ctime = {}
posix_fallocate = {}

[settings]
naptime = 0.001
allow_remount = false
expected_failures = []

[dummy_auth]
entries = [
  ["nobody", "nogroup"],
  ["tests", "tests"],
]
EOF
mkdir "$MNT/pjdfstest"
set +e
NO_COLOR=1 pjdfstest -c "$WORK/pjdfstest.toml" -p "$MNT/pjdfstest" -s "$WORK/secondary" \
    >"$WORK/pjdfstest.log" 2>&1
set -e
summary=$(grep '^Summary:' "$WORK/pjdfstest.log" || true)
if [ -z "$summary" ]; then
    echo "posix: pjdfstest printed no summary:" >&2
    tail -40 "$WORK/pjdfstest.log" >&2
    exit 1
fi
echo "pjdfstest: ${summary#Summary: }"
count() { sed -n "s/.* \([0-9]\+\) $1.*/\1/p" <<<"$summary"; }
passed=$(count passed)
failed=$(count failed)
failures=()
while read -r name _; do
    failures+=("$name")
done < <(grep -E ' (FAILED|PASSED UNEXPECTEDLY)$' "$WORK/pjdfstest.log" || true)

# fsx: one test per seed, with close/open, truncate, fsync and mmap reads and writes.
cat >"$WORK/fsx.toml" <<'EOF'
flen = 262144

[weights]
close_open = 1
read = 10
write = 10
mapread = 10
mapwrite = 10
invalidate = 1
truncate = 1
fsync = 1
fdatasync = 1
EOF
for seed in "${FSX_SEEDS[@]}"; do
    log=$WORK/fsx-$seed.log
    if fsx -N "$FSX_OPS" -S "$seed" -f "$WORK/fsx.toml" -P "$WORK/fsx-artifacts" \
        "$MNT/fsx-$seed" >"$log" 2>&1 && grep -q 'A-OK' "$log"; then
        echo "fsx seed $seed: A-OK ($FSX_OPS ops)"
        passed=$((passed + 1))
    else
        echo "fsx seed $seed: FAILED"
        tail -20 "$log" | sed 's/^/    /'
        failed=$((failed + 1))
        failures+=("fsx::seed-$seed")
    fi
done

unexpected=0
for name in "${failures[@]}"; do
    reason=""
    for entry in "${EXPECTED_FAILURES[@]}"; do
        if [ "${entry%%|*}" = "$name" ]; then reason=${entry#*|}; fi
    done
    if [ -n "$reason" ]; then
        echo "expected failure: $name ($reason)"
    else
        echo "FAILED: $name"
        grep -A3 "^$name " "$WORK/pjdfstest.log" | tail -n +2 | sed 's/^/    /' || true
        unexpected=$((unexpected + 1))
    fi
done

echo "posix: $passed passed, $failed failed"
[ "$unexpected" -eq 0 ]
