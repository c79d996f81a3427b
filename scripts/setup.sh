#!/usr/bin/env bash
# Machine setup for the mount and its tests (idempotent, non-interactive): Debian packages,
# installed only when missing, and the /dev/fuse device. Under CI (CI=true) a machine that
# cannot mount fails here, loudly; elsewhere the FUSE tests skip themselves with a message.
set -euo pipefail

# Debian packages the mount and its tests need, each installed only when its command is missing:
# fuse3 (fusermount3), attr (setfattr/getfattr for the xattr tests), libcap2-bin (setcap/getcap
# for the capability checks), git and rsync (the shell
# scenario compared against a local directory), chromium (the status page test renders the
# page headless: a screenshot and the DOM), iproute2 (ip) and nftables (nft): the
# network-namespace test runs each node in its own namespace and cuts nodes off with nft.
missing=()
command -v fusermount3 >/dev/null 2>&1 || [ -x /bin/fusermount3 ] || missing+=(fuse3)
command -v setfattr >/dev/null 2>&1 || missing+=(attr)
command -v setcap >/dev/null 2>&1 || [ -x /usr/sbin/setcap ] || [ -x /sbin/setcap ] || missing+=(libcap2-bin)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -e /dev/fuse ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "setup: /dev/fuse is missing; CI must run on a machine (or container with --device /dev/fuse) that can mount FUSE" >&2
        exit 1
    fi
    echo "setup: warning: /dev/fuse is missing; the FUSE tests will be skipped" >&2
fi
