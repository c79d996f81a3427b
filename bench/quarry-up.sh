# bench/quarry-up.sh — sourced by bench scripts: start and stop one `quarry up --mount` cluster.
#
#   quarry_up_start BIN DATA MNT LOG   start it in the background, wait (bounded, 60 s) until MNT
#                                      is in /proc/mounts; sets QPID
#   quarry_up_stop MNT                 SIGTERM (quarry up unmounts first), SIGKILL after 60 s,
#                                      then unmount MNT if a killed process left it mounted
#   bench_inputs_need                  install what the shared harness reads its inputs from
#                                      (Debian's linux-source-6.1 for the kernel tarball, which
#                                      ../shared/bench/fsbench.sh builds before any test)
QPID=
quarry_up_start() {
  local bin=$1 data=$2 mnt=$3 log=$4
  mkdir -p "$mnt"
  "$bin" up --data "$data" --mount "$mnt" > "$log" 2>&1 &
  QPID=$!
  local deadline=$((SECONDS + 60))
  until grep -q " $mnt " /proc/mounts; do
    kill -0 "$QPID" 2>/dev/null || { cat "$log" >&2; echo "quarry up exited" >&2; return 1; }
    ((SECONDS < deadline)) || { cat "$log" >&2; echo "no mount at $mnt after 60 s" >&2; return 1; }
    sleep 0.2
  done
}
quarry_up_stop() {
  local mnt=$1
  if [[ -n $QPID ]] && kill -0 "$QPID" 2>/dev/null; then
    kill -TERM "$QPID"
    for _ in $(seq 1 300); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$QPID" 2>/dev/null && kill -KILL "$QPID"
    wait "$QPID" 2>/dev/null || true
  fi
  QPID=
  if grep -q " $mnt " /proc/mounts; then
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"
  fi
}
bench_inputs_need() {
  if ! ls /usr/src/linux-source-*.tar.xz > /dev/null 2>&1 \
    && [[ ! -s ${LINUX_TAR:-/tmp/fsbench/linux.tar} && ! -s ${FSBENCH_SRC:-/tmp/fsbench/src}/linux-core.tar ]]; then
    echo "installing linux-source-6.1 (the shared harness's kernel tarball)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-source-6.1 >&2
  fi
}
