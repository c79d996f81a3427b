#!/usr/bin/env bash
# Machine setup for mounting Quarry (idempotent, non-interactive): FUSE 3's fusermount3 and the
# `attr` package's setfattr/getfattr (each installed with apt-get only when missing) and the
# /dev/fuse device. Under CI (CI=true) a machine that
# cannot mount fails here, loudly; elsewhere the FUSE tests skip themselves with a message.
set -euo pipefail

if ! command -v fusermount3 >/dev/null 2>&1 && [ ! -x /usr/bin/fusermount3 ] && [ ! -x /bin/fusermount3 ]; then
    echo "setup: fusermount3 missing; installing fuse3" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq fuse3
fi

if ! command -v setfattr >/dev/null 2>&1; then
    echo "setup: setfattr missing; installing attr (the FUSE xattr tests use it)" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq attr
fi

if [ ! -e /dev/fuse ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "setup: /dev/fuse is missing; CI must run on a machine (or container with --device /dev/fuse) that can mount FUSE" >&2
        exit 1
    fi
    echo "setup: warning: /dev/fuse is missing; the FUSE tests will be skipped" >&2
fi
