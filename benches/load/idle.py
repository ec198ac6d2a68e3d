#!/usr/bin/env python3
"""Memory per idle connection (issue 22, part 1), side by side: nginx, HAProxy, plain
Pingora and the gateway, each with one worker pinned to CPU 1 in front of the fixed-body
nginx upstream on CPU 0 (the same peers and configs as run.py).

For each proxy and protocol (HTTP/1.1 keep-alive, then h2 with prior knowledge): RSS
once warm with no client ("idle"); holding 1 000 and then 10 000 connections that each
made one request and now wait for their next; and 1, 10 and 30 s after they all
closed. RSS is that of the process holding the connections (nginx's and HAProxy's
worker, the gateway's and Pingora's only process). Per connection = (RSS holding N -
RSS idle) / N. A connection the proxy closed while it was measured voids the row (the
script says so and exits non-zero).

Run: python3 benches/load/idle.py (after `cargo build --release -p gateway -p
gateway-benches --bins`; `make bench` runs it). Environment: IDLE_LEVELS (default
"1000,10000"), IDLE_PROXIES (default "nginx,haproxy,pingora,gateway"), IDLE_PROTOCOLS
(default "h1,h2"), IDLE_AFTER (seconds after close to read RSS at, default "1,10,30"). Results: stdout and target/bench/idle.json.
"""
import os
import re
import resource
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402  (the peers, their configs and process helpers)

LEVELS = [int(n) for n in os.environ.get("IDLE_LEVELS", "1000,10000").split(",")]
PROXIES = os.environ.get("IDLE_PROXIES", "nginx,haproxy,pingora,gateway").split(",")
PROTOCOLS = os.environ.get("IDLE_PROTOCOLS", "h1,h2").split(",")
AFTER = [int(s) for s in os.environ.get("IDLE_AFTER", "1,10,30").split(",")]
BATCH = 200
MOST = max(LEVELS) + 2000

H1_REQUEST = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# HPACK, static table only: :method GET, :scheme http, :path /, :authority bench.
H2_HEADERS = bytes([0x82, 0x86, 0x84, 0x41, 5]) + b"bench"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


H2_REQUEST = H2_PREFACE + frame(4, 0, 0) + frame(1, 0x5, 1, H2_HEADERS)  # SETTINGS; HEADERS END_STREAM|END_HEADERS


def recv_exact(sock, n, data):
    while len(data) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the proxy")
        data += chunk
    return data


def read_h1(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        data = recv_exact(sock, len(data) + 1, data)
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"answered {head.splitlines()[0]!r}")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    recv_exact(sock, length, rest)


def read_h2(sock):
    """Frames until stream 1 ends; the server's SETTINGS are acknowledged."""
    data = b""
    while True:
        data = recv_exact(sock, 9, data)
        length = struct.unpack(">I", b"\0" + data[:3])[0]
        data = recv_exact(sock, 9 + length, data)
        kind, flags, stream = data[3], data[4], struct.unpack(">I", data[5:9])[0] & 0x7FFFFFFF
        data = data[9 + length:]
        if kind == 4 and not flags & 1:
            sock.sendall(frame(4, 1, 0))
        elif kind == 7:
            raise ConnectionError("GOAWAY")
        elif stream == 1 and kind in (0, 1) and flags & 1:
            return


def open_connections(port, n, protocol, into):
    """Adds `n` connections to `into`, each having made one request, in batches (the
    listen backlog must not overflow)."""
    request, read = (H1_REQUEST, read_h1) if protocol == "h1" else (H2_REQUEST, read_h2)
    while n > 0:
        batch = []
        for _ in range(min(BATCH, n)):
            sock = socket.create_connection(("127.0.0.1", port), 5)
            sock.settimeout(10)
            sock.sendall(request)
            batch.append(sock)
        for sock in batch:
            read(sock)
        into.extend(batch)
        n -= len(batch)


def still_open(socks):
    """How many of `socks` the proxy has not closed (a closed one reads as EOF)."""
    count = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            count += sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
        sock.setblocking(True)
    return count


def holder(proc):
    """The process of `proc`'s tree holding the most sockets: the one with the connections."""
    def sockets(pid):
        try:
            return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return -1
    return max(R.tree(proc.pid), key=sockets)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"pid {pid} is gone")


def settled_rss(pid):
    """RSS once two readings 0.5 s apart agree within 1 % (at most 5 s)."""
    last = rss_mb(pid)
    for _ in range(10):
        time.sleep(0.5)
        now = rss_mb(pid)
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def start(kind, protocol):
    h2 = protocol == "h2"
    servers = [R.P["upstream"]]
    if kind == "nginx":
        conf = R.nginx_conf("nginx", R.P["nginx"], R.nginx_upstream_block(servers), connections=MOST, http2=h2)
        cmd = ["nginx", "-c", conf]
    elif kind == "haproxy":
        path = R.haproxy_conf(servers, maxconn=max(levels("haproxy")) + 100, h2=h2)
        with open(path) as f:
            text = f.read().replace("timeout client 30s", "timeout client 120s")
        with open(path, "w") as f:
            f.write(text)
        cmd = ["haproxy", "-W", "-db", "-f", path]
    elif kind == "pingora":
        cmd = [R.PLAIN, f"127.0.0.1:{R.P['pingora']}", f"127.0.0.1:{servers[0]}"] + (["h2c"] if h2 else [])
    else:
        path = R.gateway_conf(servers)
        with open(path) as f:
            text = re.sub(r"listeners: \[\{ (.*?) \}\]",
                          lambda m: f"listeners: [{{ {m.group(1)}, http2: {str(h2).lower()}, "
                                    f"limits: {{ max_connections: {MOST} }} }}]", f.read())
        with open(path, "w") as f:
            f.write(text)
        cmd = [R.GATEWAY, "run", "--config", path]
    return R.launch(R.pinned(1, cmd), kind, R.P[kind])


def levels(kind):
    """LEVELS, except that HAProxy reserves two descriptors per connection at start and
    refuses a `maxconn` the descriptor limit cannot cover: its top level is then what fits
    (the table says so)."""
    if kind != "haproxy":
        return LEVELS
    fits = (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 500) // 2 - 100
    return [min(n, fits) for n in LEVELS]


def measure(kind, protocol):
    proc = start(kind, protocol)
    port = R.P[kind]
    try:
        warm = []
        open_connections(port, BATCH, protocol, warm)  # allocator, pools, upstream connections warm
        for sock in warm:
            sock.close()
        time.sleep(1)
        pid = holder(proc)
        row = {"idle_mb": settled_rss(pid), "held_mb": {}, "kb_per_conn": {}}
        socks = []
        for level in levels(kind):
            open_connections(port, level - len(socks), protocol, socks)
            rss = settled_rss(pid)
            alive = still_open(socks)
            if alive != len(socks):
                raise SystemExit(f"{kind} {protocol}: {len(socks) - alive} of {len(socks)} connections were "
                                 f"closed while held; the figure is void (logs in {R.TMP})")
            row["held_mb"][level] = rss
            row["kb_per_conn"][level] = (rss - row["idle_mb"]) * 1024 / level
        closed_at = time.monotonic()
        for sock in socks:
            sock.close()
        for after in AFTER:
            time.sleep(max(0.0, closed_at + after - time.monotonic()))
            row[f"after_{after}s_mb"] = rss_mb(pid)
        R.check_alive(proc, kind)
        return row
    finally:
        R.stop(proc)


def main():
    for binary in [R.GATEWAY, R.PLAIN]:
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} is missing: cargo build --release -p gateway -p gateway-benches --bins")
    os.makedirs(R.OUT, exist_ok=True)
    # Every peer (HAProxy asks for 2 descriptors per connection) and this client hold
    # over 10 000 sockets: raise the limit where allowed (root), else say what is missing.
    want = 2 * MOST + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < max(LEVELS) + 1000:
        raise SystemExit(f"needs {max(LEVELS) + 1000} open files (ulimit -n: {soft}, hard {hard}); "
                         f"raise it or set IDLE_LEVELS lower")
    report = {}
    try:
        upstream = R.start_upstream()
        names = " / ".join(f"{n // 1000}k" for n in LEVELS)
        print(f"{'':16}{'idle MB':>9}{'holding ' + names + ' MB':>26}{'KB/conn at ' + names:>40}"
              f"{'after close ' + '/'.join(f'{a}s' for a in AFTER) + ' MB':>30}  back within 20 %", flush=True)
        for protocol in PROTOCOLS:
            for kind in PROXIES:
                row = measure(kind, protocol)
                R.check_alive(upstream, "upstream")
                report[f"{kind} {protocol}"] = row
                back = row[f"after_{AFTER[-1]}s_mb"] <= 1.2 * row["idle_mb"]
                held = " / ".join(f"{mb:.1f}" for mb in row["held_mb"].values())
                per = " / ".join(f"{kb:.1f}" for kb in row["kb_per_conn"].values())
                if list(row["held_mb"]) != LEVELS:
                    per += f" (at {' / '.join(str(n) for n in row['held_mb'])})"
                after = " / ".join(f"{row[f'after_{a}s_mb']:.1f}" for a in AFTER)
                print(f"{kind + ' ' + protocol:16}{row['idle_mb']:>9.1f}{held:>26}{per:>40}{after:>30}  "
                      f"{'yes' if back else 'no'}", flush=True)
    finally:
        R.stop_all()
    R.write_report("idle", report)


if __name__ == "__main__":
    main()
