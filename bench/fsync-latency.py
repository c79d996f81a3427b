#!/usr/bin/python3
"""bench/fsync-latency.py [DIR] [N] — the disk's floor under one durable metadata change.

A Raft commit in Quarry waits for the leader's log fdatasync and then a follower's (openraft
0.9 replicates an entry only after the leader's own flush), so two of these back to back bound
every mutation through the mount from below, whatever the CPU does. This appends N records of
300 bytes (about one log entry) with one fdatasync each to a file in DIR (default: the current
directory, i.e. the disk the masters would use), in four layouts: sparse (ftruncate), fallocated,
pre-zeroed, and a plain growing file; and prints the mean, median and 99th percentile per call.
"""
import os
import sys
import time


def run(directory, layout, n, record=300, size=64 << 20):
    path = os.path.join(directory, ".fsync-latency-%d-%s" % (os.getpid(), layout))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if layout == "sparse":
            os.ftruncate(fd, size)
        elif layout == "fallocated":
            os.posix_fallocate(fd, 0, size)
        elif layout == "zeroed":
            block = b"\0" * (1 << 20)
            for i in range(size >> 20):
                os.pwrite(fd, block, i << 20)
        os.fsync(fd)
        payload = b"x" * record
        lat = []
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, payload, i * record)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
        total = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    print("%-11s mean %.3f ms  p50 %.3f ms  p99 %.3f ms  (%d appends)"
          % (layout, total / n * 1e3, lat[n // 2] * 1e3, lat[int(n * 0.99)] * 1e3, n))


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    for layout in ("sparse", "fallocated", "zeroed", "growing"):
        run(directory, layout, n)


if __name__ == "__main__":
    main()
