#!/usr/bin/env python3
"""Probes `dlsys server` the way issue 17's attacker did and prints what each attack costs.

Usage: bench/server/limits_probe.py BUILD_DIR

Starts the server on a fresh data directory (under `ulimit -n 256`), then:
  - memory: the server's peak RSS (VmHWM) after JSON bodies of 16 MB, and of the largest body
    the drift route accepts (1,048,576 values);
  - auth: an unauthenticated PUT of an 8 GB artifact: time to the answer, bytes stored;
  - connections: 300 idle connections, then the latency of 10 health checks;
  - nesting: a 130 KB body of 65,536 nested arrays.
"""
import json, os, shutil, socket, subprocess, sys, tempfile, time, resource


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def request(port, raw, timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(raw)
    out = b""
    t0 = time.time()
    while True:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        if not b:
            break
        out += b
        head, sep, body = out.partition(b"\r\n\r\n")
        if sep:
            cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if cl and len(body) >= int(cl[0].split(b":")[1]):
                break
    s.close()
    return out, time.time() - t0


def post(port, path, body, extra=b""):
    return request(port, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra +
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    d = tempfile.mkdtemp(prefix="dlsys-probe-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    srv = subprocess.Popen([os.path.join(build, "dlsys"), "server", "--data-dir", d, "--port",
                            str(port), "--access-log", "off"], stdout=subprocess.PIPE,
                           preexec_fn=limit)
    print(srv.stdout.readline().decode().strip())
    try:
        base = vm_hwm(srv.pid)
        print(f"peak RSS after start: {base:.1f} MiB")
        csv = b"a,b,label\n" + b"".join(b"%d,%d,%d\n" % (i, i * 2, i % 2) for i in range(100))
        r, _ = post(port, "/api/v1/datasets/d/versions?format=csv", csv)
        assert r.startswith(b"HTTP/1.1 201"), r[:300]

        # 16 MB of JSON: 8M one-digit values, on a 1 MiB route and on the 16 MiB drift route.
        big = b"{\"a\":[" + b",".join([b"1"] * (7 << 20)) + b"]}"
        for path in ["/api/v1/runs/search", "/api/v1/datasets/d/versions/v1/drift"]:
            r, t = post(port, path, big)
            msg = json.loads(r.partition(b"\r\n\r\n")[2])["error"]["message"][:90]
            print(f"{len(big)/1e6:.1f} MB JSON to {path}: {r.split(b' ')[1].decode()} in {t*1000:.0f} ms, "
                  f"{msg}; peak RSS {vm_hwm(srv.pid):.1f} MiB")
        ok = b'{"a":[' + b",".join([b"1"] * ((1 << 20) - 8)) + b"]}"
        r, t = post(port, "/api/v1/datasets/d/versions/v1/drift", ok)
        print(f"largest accepted drift body ({len(ok)/1e6:.1f} MB, 1,048,568 values): "
              f"{r.split(b' ')[1].decode()} in {t*1000:.0f} ms; peak RSS {vm_hwm(srv.pid):.1f} MiB")

        # PUT of 8 GB with a token that does not exist (checked even with auth off).
        t0 = time.time()
        r, t = request(port, b"PUT /api/v1/runs/1/artifacts/x HTTP/1.1\r\nHost: x\r\n"
                       b"Authorization: Bearer dls_bogus\r\nContent-Length: 8000000000\r\n\r\n")
        stored = sum(os.path.getsize(os.path.join(d, "objects", "tmp", f))
                     for f in os.listdir(os.path.join(d, "objects", "tmp")))
        print(f"PUT 8 GB with a bogus token: {r.split(b' ')[1].decode()} in {t*1000:.1f} ms, "
              f"{stored} bytes stored")

        # 65,536 levels of nesting.
        deep = b'{"a":' + b"[" * 65536 + b"]" * 65536 + b"}"
        r, t = post(port, "/api/v1/runs/search", deep)
        print(f"{len(deep)/1e3:.0f} KB body nested 65,536 deep: {r.split(b' ')[1].decode()} in "
              f"{t*1000:.1f} ms, server alive: {srv.poll() is None}")

        # 300 idle connections under ulimit -n 256.
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        lat = []
        for _ in range(10):
            r, t = request(port, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
            assert r.startswith(b"HTTP/1.1 200"), r[:200]
            lat.append(t * 1000)
        for s in idle:
            s.close()
        print(f"300 idle connections under ulimit -n 256: 10 health checks answered, "
              f"max {max(lat):.1f} ms, median {sorted(lat)[5]:.1f} ms")
        m, _ = request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        for line in m.decode().splitlines():
            if line.startswith(("dlsys_http_connections", "dlsys_http_idle", "dlsys_http_request_memory")):
                print("  " + line)
    finally:
        srv.terminate()
        srv.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
