#!/usr/bin/python3
"""bench/dist/wire.py: a point-to-point link between two network namespaces with a set rate and
one-way delay, for kernels without netem (CONFIG_NET_SCH_NETEM).

Each namespace gets a TUN device with an address of its own; this process holds both devices
and carries every IP packet from one to the other: a packet leaves its sender's queue at the
link's rate (back to back with the packets before it, each taking size / rate), and arrives
`delay` later. Packets are delivered in order; a packet that finds more than `--buffer` bytes
still waiting to be sent in its direction is dropped, as a router's full queue would (TCP backs
off); packets on the wire (sent, not yet arrived) do not count. Timing is Python's
select() on a monotonic clock: about 50-100 us of jitter, and the process takes CPU time of its
own (a few percent of a core per 10 MB/s); `wire.py` says so in its first line.

Usage (root): wire.py NS_A IF_A ADDR_A NS_B IF_B ADDR_B --rate 1gbit --delay 0.2ms
It creates the devices, attaches to both, prints "ready", and runs until SIGTERM or SIGINT or
its parent's end; the devices go with their namespaces (or `ip -n NS link del IF`).
"""
import argparse
import collections
import ctypes
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
MTU = 9000  # jumbo frames: fewer packets for this process to carry


def parse_rate(text):
    """'1gbit', '100mbit', '500kbit', '10mbps' (bytes) -> bytes per second."""
    m = re.fullmatch(r"([0-9.]+)\s*([kmg]?)(bit|bps)", text.strip().lower())
    if not m:
        raise ValueError(f"rate '{text}': expected a number and kbit, mbit, gbit or kbps, mbps, gbps")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
    value = float(m.group(1)) * scale
    return value / 8 if m.group(3) == "bit" else value


def parse_delay(text):
    """'0.2ms', '200us', '1s' -> seconds."""
    m = re.fullmatch(r"([0-9.]+)\s*(us|ms|s)", text.strip().lower())
    if not m:
        raise ValueError(f"delay '{text}': expected a number and us, ms or s")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def sh(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")


def open_tun(ns, name):
    """Attaches to the TUN device `name` of namespace `ns` (the lookup is by name in the
    calling thread's namespace, so the thread enters it and comes back)."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)
    return fd


class Direction:
    """One way of the link: packets queued with the time they arrive at the other end."""

    def __init__(self, rate, delay, buffer):
        self.rate, self.delay, self.buffer = rate, delay, buffer
        self.queue = collections.deque()  # (arrival time, packet), arrival times non-decreasing
        self.sent_until = 0.0  # when the last queued packet has left the sender
        self.dropped = 0

    def push(self, packet, now):
        backlog = max(self.sent_until - now, 0.0) * self.rate  # bytes still to be sent
        if backlog + len(packet) > self.buffer:
            self.dropped += 1
            return
        leave = max(now, self.sent_until) + len(packet) / self.rate
        self.sent_until = leave
        self.queue.append((leave + self.delay, packet))

    def due(self, now):
        while self.queue and self.queue[0][0] <= now:
            yield self.queue.popleft()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for side in ("a", "b"):
        ap.add_argument(f"ns_{side}")
        ap.add_argument(f"if_{side}")
        ap.add_argument(f"addr_{side}")
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--delay", default="0.2ms")
    ap.add_argument("--buffer", type=int, default=4 << 20,
                    help="bytes waiting to be sent, a direction, at most")
    a = ap.parse_args()
    # Ends with the process that started it (a benchmark killed would leave it holding the
    # devices, and so the namespaces, alive).
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    rate, delay = parse_rate(a.rate), parse_delay(a.delay)
    ends = [(a.ns_a, a.if_a, a.addr_a), (a.ns_b, a.if_b, a.addr_b)]
    for ns, name, addr in ends:
        sh("ip", "-n", ns, "tuntap", "add", "dev", name, "mode", "tun")
        sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", name)
        sh("ip", "-n", ns, "link", "set", name, "mtu", str(MTU), "up")
    fds = [open_tun(ns, name) for ns, name, _ in ends]
    ways = [Direction(rate, delay, a.buffer), Direction(rate, delay, a.buffer)]  # a->b, b->a
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(f"ready: {a.rate} ({rate / 1e6:.1f} MB/s) and {delay * 1e3:.3f} ms each way between "
          f"{a.addr_a} and {a.addr_b} (a userspace link: ~0.1 ms of jitter, and this process "
          f"uses CPU time)", flush=True)
    while not stop:
        now = time.monotonic()
        for i, way in enumerate(ways):
            for packet in way.due(now):
                try:
                    os.write(fds[1 - i], packet)
                except BlockingIOError:
                    way.dropped += 1  # the receiving kernel's queue is full
        waits = [way.queue[0][0] - now for way in ways if way.queue]
        timeout = max(min(waits), 0.0) if waits else 0.5
        ready, _, _ = select.select(fds, [], [], timeout)
        for fd in ready:
            way = ways[fds.index(fd)]
            for _ in range(256):
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                way.push(packet, time.monotonic())
    print(f"wire: dropped {ways[0].dropped} packets a->b, {ways[1].dropped} b->a", flush=True)


if __name__ == "__main__":
    main()
