#!/usr/bin/env python3
"""perf-categories.py DATA CPU_S [DATA CPU_S ...] — group a flat `perf record` profile (as written
by bench/profile-putget.sh) into coarse categories (page-cache copies, QUIC user space, AES-GCM,
kernel UDP/IP, memcpy, page faults, ...), printing each category's share of samples and that share
of CPU_S seconds. The categories are name heuristics; see bench/RESULTS.md for their use."""
import re
import subprocess
import sys

def cats(path):
    out = subprocess.run(["perf","report","-i",path,"--no-children","--sort","dso,sym","--stdio","-F","overhead,dso,sym"],capture_output=True,text=True).stdout
    c = {}
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not m: continue
        pct, dso, kind, sym = float(m[1]), m[2], m[3], m[4].strip()
        if "copy_folio_from_iter" in sym: k="kernel: write() into page cache (chunk files / local file)"
        elif sym in ("_copy_to_iter","copy_page_to_iter") or "copy_to_iter" in sym: k="kernel: read()/recvmsg copy to user"
        elif "_copy_from_iter" in sym: k="kernel: copy from user (sendmsg)"
        elif re.search(r"aes|gcm|ghash|aead|chacha|poly1305", sym, re.I): k="AES-GCM (ring)"
        elif "crc32c" in sym or "crc_u64" in sym: k="crc32c"
        elif "memmove" in sym or "memcpy" in sym: k="libc memcpy/memmove"
        elif "memset" in sym: k="libc memset"
        elif re.search(r"malloc|free|_int_|cfree|realloc", sym) and dso.startswith("libc"): k="malloc/free"
        elif re.search(r"fault|clear_page|do_anonymous|unmap|mas_|lruvec|memcg|folio|page_from_freelist", sym) and kind=="k": k="kernel: page faults / page alloc"
        elif re.search(r"udp|ip_|__ip|sock|skb|net_|dev_|fib_|nf_|loopback|inet|__sys_send|__sys_recv|recvmsg|sendmsg", sym) and kind=="k": k="kernel: UDP/IP stack"
        elif re.search(r"sched|task_switch|spin|futex|epoll|wake|softirq|irq|__schedule|syscall|entry_", sym) and kind=="k": k="kernel: scheduling, futex/epoll, syscall entry, softirq"
        elif kind=="k": k="kernel: other"
        elif "quinn" in sym or "rustls" in sym: k="quinn/rustls protocol code"
        elif "tokio" in sym: k="tokio runtime"
        elif dso=="quarry": k="quarry: other (alloc::collections etc., mostly called by quinn)"
        else: k="other: "+dso
        c[k] = c.get(k,0)+pct
    return c
for name, cpu in [(a, float(b)) for a,b in zip(sys.argv[1::2], sys.argv[2::2])]:
    c = cats(name)
    tot = sum(c.values())
    print(f"== {name}: {cpu} CPU-s")
    for k,v in sorted(c.items(), key=lambda x:-x[1]):
        if v >= 0.8: print(f"  {v:5.1f}%  {v/100*cpu:5.2f} s  {k}")
