#!/usr/bin/env python3
"""Side-by-side load benchmark on loopback: direct, nginx, HAProxy, the gateway.

1. Throughput: wrk -t1 -c32 against each, after a warm-up, interleaved over rounds
   (A/B/A/B, at least 5 for the medians), then nginx, HAProxy and the gateway again,
   terminating TLS. Proxies pinned to CPU 1, wrk and the upstream (an nginx returning a
   fixed body) to CPU 0. The headline is CPU time per request, from the kernel's
   accounting of the proxy's own processes (/proc/PID/stat), as a ratio to nginx's:
   requests/s compare proxies only when each kept its core busy, and the driver and
   the upstream share the other core, so a fast proxy can be capped by them. Each row
   says how busy the proxy's core was and is flagged when under 90 %. p50/p99 are
   wrk's closed-loop latencies at saturation (32 connections): they restate
   throughput, and are labelled so; the incidents' fixed-rate p99 is the latency
   figure. Also requests/s, peak RSS. Then the WASM predicate's cost once more, side by side:
   the gateway with and without it running at the same time on CPU 1, each driven by
   its own wrk (PAIRED_ROUNDS rounds, default 5; see `side_by_side`).
2. Incidents (fixed-rate load, ~200 req/s): upstream dead for 10 s, upstream slow (2 s)
   for 10 s, one of two endpoints dead for 10 s. Each proxy with its closest equivalent
   settings. Reports client-visible errors, p99 latency during the incident (all of it,
   and from 2 s in, once every proxy had time to detect it), time to the first upstream
   success after the upstream is back. 200 clients at one request a second each, so a
   client stuck on a slow upstream does not lower the offered load.
   A plain Pingora proxy (benches/src/bin/plain-pingora.rs) is a fifth row: what
   Pingora itself costs per request, with the gateway's runtime settings and allocator.
3. Reload under load: 100 reload signals to each proxy (gateway: SIGHUP; nginx: HUP to
   the master; HAProxy: USR2 to the master) under the same fixed-rate load; failed
   requests, and how many reloads were actually applied (gateway: its reload counter;
   nginx and HAProxy: new worker processes seen), since signals can coalesce.

Every peer must find its port free (a stale listener would be measured instead), must
be the process that listens on it once started (checked through /proc), and must
still be alive after each run. Everything binds 127.0.0.1, runs for fixed durations and
is stopped at the end.
Results: stdout, target/bench/load.json, target/bench/load.csv.
Environment: BENCH_DURATION (s per wrk run, default 10), BENCH_WARMUP (s of load before
each measured run, default a fifth of BENCH_DURATION, at least 1), BENCH_ROUNDS (default
5; fewer is for trying the script, and the output says the medians are not to be used),
BENCH_SECTIONS (comma list of throughput,incidents,reload; default all), BENCH_STEADY=1
(throughput runs only at the machine's full speed: a fixed CPU loop is timed on the
proxy's core just before and after each run, and a run is repeated, up to
BENCH_ATTEMPTS times (default 8), unless both timings are within 10 % of the fastest
seen; for VMs whose speed swings between full and about half for seconds at a time, as
the one docs/PERFORMANCE.md was measured on does; use it with BENCH_DURATION=3. "Fastest
seen" is within this run: a machine slow for all of it is not detected, so compare
absolute figures with earlier runs).
"""
import csv
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GATEWAY = os.path.join(ROOT, "target", "release", "gateway")
ORIGIN = os.path.join(ROOT, "target", "release", "bench-origin")
PLAIN = os.path.join(ROOT, "target", "release", "plain-pingora")
WASM = os.path.join(ROOT, "plugins", "target", "wasm32-wasip2", "release")
OUT = os.path.join(ROOT, "target", "bench")
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
WARMUP = int(os.environ.get("BENCH_WARMUP", str(max(1, DURATION // 5))))
# Below this share of its core, a proxy's requests/s was capped by something else.
SATURATED = 0.9
SECTIONS = os.environ.get("BENCH_SECTIONS", "throughput,incidents,reload").split(",")
STEADY = os.environ.get("BENCH_STEADY") == "1"
ATTEMPTS = int(os.environ.get("BENCH_ATTEMPTS", "8"))
PIN = shutil.which("taskset") is not None and os.cpu_count() and os.cpu_count() >= 2
P = {"upstream": 18100, "nginx": 18101, "haproxy": 18102, "gateway": 18103, "pingora": 18104, "admin": 18193,
     "origin1": 18110, "origin2": 18111, "redis": 18120}
TMP = tempfile.mkdtemp(prefix="gw-bench-")
PROCS = []


def pinned(cpu, cmd):
    return (["taskset", "-c", str(cpu)] + cmd) if PIN else cmd


def start(cmd, name):
    log = open(os.path.join(TMP, name + ".log"), "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout}s; logs in {TMP}")


def listening_inodes(port):
    """Socket inodes listening on 127.0.0.1:`port` (or any address), from /proc/net."""
    inodes = set()
    for table in ["/proc/net/tcp", "/proc/net/tcp6"]:
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_free(port, name):
    """Refuses to start `name` on a port something already listens on: with
    SO_REUSEPORT a stale process could share the port and answer part of the load."""
    if listening_inodes(port):
        raise SystemExit(f"{name}: something already listens on 127.0.0.1:{port} (a stale run?); stop it first")


def check_serves(proc, port, name):
    """`proc` (or a child of it) is alive and is what listens on `port`."""
    if proc.poll() is not None:
        raise SystemExit(f"{name} exited with {proc.returncode}; logs in {TMP}")
    inodes = listening_inodes(port)
    for pid in tree(proc.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return
    raise SystemExit(f"{name}: 127.0.0.1:{port} is not served by pid {proc.pid} or its children; logs in {TMP}")


def check_alive(proc, name):
    if proc.poll() is not None:
        raise SystemExit(f"{name} died during the run (exit {proc.returncode}); its figures are void; logs in {TMP}")


def stop_all():
    for p in PROCS:
        stop(p)


def write_report(name, report):
    """target/bench/NAME.json, and where it and the processes' logs are."""
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwritten: {OUT}/{name}.json (process logs in {TMP})")


def launch(cmd, name, port):
    """Starts `cmd` as `name`, which must come to listen on `port`, and checks it does."""
    port_free(port, name)
    proc = start(cmd, name)
    wait_port(port)
    check_serves(proc, port, name)
    return proc


def tree(pid):
    """pid and all its descendants."""
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if int(fields[1]) == parent:
                        pids.append(int(entry))
                        frontier.append(int(entry))
                except (OSError, IndexError, ValueError):
                    pass
    return pids


def cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / ticks


def peak_rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def unit(value):
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def wrk(port, tls=False, duration=None):
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    out = subprocess.run(pinned(0, ["wrk", "-t1", "-c32", f"-d{duration or DURATION}s", "--latency", url]),
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    # "Socket errors: connect 0, read 0, write 0, timeout 0" and "Non-2xx or 3xx responses: N"
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = (sum(int(n) for n in socket.groups()) if socket else 0) + (int(non_2xx.group(1)) if non_2xx else 0)
    # Anchored: the thread stats' "+/- Stdev" column (say "69.99%") must not match.
    p50 = unit(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
    p99 = unit(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    return {"rps": rps, "requests": requests, "errors": errors, "p50_ms": p50, "p99_ms": p99}


# ---------------------------------------------------------------- configs

def certificate():
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (made once per run): cert, key,
    and both in one file for HAProxy."""
    d = os.path.join(TMP, "tls")
    cert, key, both = (os.path.join(d, n) for n in ["cert.pem", "key.pem", "both.pem"])
    if not os.path.exists(both):
        os.makedirs(d, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=bench.test",
                        "-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1"],
                       check=True, capture_output=True)
        with open(both, "w") as f:
            f.write(open(cert).read() + open(key).read())
    return cert, key, both


def nginx_conf(name, listen, body, tls=False, connections=8192, http2=False):
    ssl = ""
    if tls:
        cert, key, _ = certificate()
        ssl = f" ssl; ssl_certificate {cert}; ssl_certificate_key {key}"
    d = os.path.join(TMP, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {connections * 2};
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  {body}
  server {{ listen 127.0.0.1:{listen}{ssl}{" http2" if http2 else ""}; location / {{ {"return 200 'hello from upstream';" if name == "upstream" else "proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ''; proxy_connect_timeout 1s; proxy_read_timeout 1s; proxy_next_upstream error timeout;"} }} }}
}}
""")
    return conf


def nginx_upstream_block(servers):
    lines = "".join(f"server 127.0.0.1:{s} max_fails=3 fail_timeout=2s; " for s in servers)
    return f"upstream up {{ {lines} keepalive 64; }}"


def haproxy_conf(servers, name="haproxy", tls=False, maxconn=4000, h2=False):
    ssl = f" ssl crt {certificate()[2]}" if tls else ""
    if h2:
        ssl += " proto h2"
    path = os.path.join(TMP, name + ".cfg")
    lines = "\n".join(
        f"  server s{i} 127.0.0.1:{s} check inter 500ms fall 3 rise 2 observe layer7 error-limit 3 on-error mark-down"
        for i, s in enumerate(servers))
    with open(path, "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn {maxconn}
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 1s
  timeout check 1s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{P['haproxy']}{ssl}
  default_backend be
backend be
  option httpchk GET /health
{lines}
""")
    return path


# Gateway rows with plugins: a WASM predicate judging every response, and a WASM
# fallback answering every request while the breaker is forced open.
PLUGINS = f"""plugins:
  rules: {{ path: "{WASM}/status_latency_predicate.wasm", kind: predicate, config: {{ failure_statuses: "500-599,429", failure_header: x-degraded, slow_ms: 800 }} }}
  degraded: {{ path: "{WASM}/degraded_fallback.wasm", kind: fallback, config: {{ document: {{ quotes: [] }} }} }}
"""
GATEWAY_VARIANTS = {
    "gateway": "",
    "gw+predicate": "    breaker: { predicate: rules }\n",
    "gw+fallback": "    breaker: { fallback: { plugin: degraded } }\n",
    "gw+cluster": "",
}
# Variants with a top-level section: the fleet link to a local redis-server
# (`start_redis`), which the request path must not notice.
TOP_LEVEL_VARIANTS = {
    "gw+cluster": f'cluster: {{ redis_url: "redis://127.0.0.1:{P["redis"]}", name: bench }}\n',
}


def start_redis():
    """A redis-server on CPU 0 for the `gw+cluster` variant."""
    port_free(P["redis"], "redis")
    start(pinned(0, ["redis-server", "--bind", "127.0.0.1", "--port", str(P["redis"]),
                     "--save", "", "--appendonly", "no"]), "redis")
    wait_port(P["redis"])


def gateway_conf(servers, extra="", name="gateway", tls=False, port=P["gateway"], admin=P["admin"], wasm=WASM, top=""):
    listener = f'address: "127.0.0.1:{port}"'
    if tls:
        cert, key, _ = certificate()
        listener += f', tls: {{ certificates: [{{ cert: "{cert}", key: "{key}" }}] }}'
    path = os.path.join(TMP, name + ".yaml")
    endpoints = ", ".join(f'"127.0.0.1:{s}"' for s in servers)
    with open(path, "w") as f:
        f.write(f"""server: {{ threads: 1, access_log: false, watch_config: false, upgrade_socket: "{TMP}/{name}-upgrade.sock" }}
listeners: [{{ {listener} }}]
admin: {{ address: "127.0.0.1:{admin}" }}
{top}{PLUGINS.replace(WASM, wasm) if "rules" in extra or "degraded" in extra else ""}upstreams:
  up:
    endpoints: [{endpoints}]
    timeouts: {{ connect: 1s, read: 1s }}
{extra}routes:
  - {{ upstream: up }}
""")
    return path


def start_proxy(kind, servers, gateway_extra="", tls=False, gateway_top=""):
    if kind == "nginx":
        conf = nginx_conf("nginx", P["nginx"], nginx_upstream_block(servers), tls)
        cmd = ["nginx", "-c", conf]
    elif kind == "haproxy":
        cmd = ["haproxy", "-W", "-db", "-f", haproxy_conf(servers, tls=tls)]
    elif kind == "pingora":
        cmd = [PLAIN, f"127.0.0.1:{P['pingora']}", f"127.0.0.1:{servers[0]}"]
    else:
        cmd = [GATEWAY, "run", "--config", gateway_conf(servers, gateway_extra, tls=tls, top=gateway_top)]
        kind = "gateway"
    return launch(pinned(1, cmd), kind, P[kind])


def start_upstream():
    """The throughput runs' upstream: an nginx answering a fixed body, on CPU 0."""
    return launch(pinned(0, ["nginx", "-c", nginx_conf("upstream", P["upstream"], "")]), "upstream", P["upstream"])


def force_open(upstream="up"):
    """Forces the gateway's breaker open through the admin API."""
    req = urllib.request.Request(f"http://127.0.0.1:{P['admin']}/api/v1/breakers/{upstream}/state",
                                 data=b'{"state":"forced_open"}', method="PUT",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()


# ---------------------------------------------------------------- fixed-rate load

class Load:
    """Keep-alive clients at a fixed total rate, recording (start, latency, ok, upstream_answered).

    One request a second per client, so that a client stuck for the 1 s upstream timeout
    still keeps its schedule: the offered load stays ~200 req/s whatever the proxy does
    (with few clients, a proxy that makes clients wait would also receive fewer requests
    during an incident, and a burst of them after it)."""

    def __init__(self, port, rate=200, workers=200):
        self.port, self.interval, self.workers = port, workers / rate, workers
        self.records, self.lock, self.running, self.retried = [], threading.Lock(), True, 0
        # Staggered starts: arrivals spread evenly over each second, not in one burst.
        self.threads = [threading.Thread(target=self.worker, args=(i * self.interval / workers,), daemon=True)
                        for i in range(workers)]

    def request(self, sock):
        sock.sendall(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?i)content-length:\s*(\d+)", head)
        length = int(m.group(1)) if m else 0
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            rest += chunk
        close = re.search(rb"(?i)connection:\s*close", head) is not None
        return status, rest[:length], close

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), 2)
        sock.settimeout(5)
        return sock

    def worker(self, offset):
        time.sleep(offset)
        sock, next_at = None, time.time()
        while self.running:
            next_at += self.interval
            started = time.time()
            ok, upstream = False, False
            try:
                reused = sock is not None
                if sock is None:
                    sock = self.connect()
                try:
                    status, body, close = self.request(sock)
                except (ConnectionError, OSError):
                    if not reused:
                        raise
                    # A reused keep-alive connection closed before any response: retry
                    # once on a new one, as HTTP clients do for idempotent requests
                    # (RFC 9112 9.3.1). Counted, so the table can show it.
                    sock.close()
                    with self.lock:
                        self.retried += 1
                    sock = self.connect()
                    status, body, close = self.request(sock)
                ok = status == 200
                upstream = ok and not body.startswith(b"{")  # gateway fallbacks are JSON
                if close:
                    sock.close()
                    sock = None
            except OSError:
                if sock:
                    sock.close()
                sock = None
            with self.lock:
                self.records.append((started, time.time() - started, ok, upstream))
            time.sleep(max(0.0, next_at - time.time()))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        for t in self.threads:
            t.join()


def p99(values):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))] * 1000


def origin_fault(port, query, method="POST"):
    s = socket.create_connection(("127.0.0.1", port), 2)
    s.sendall(f"{method} /_fault?{query} HTTP/1.1\r\nhost: f\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
    s.recv(4096)
    s.close()


# ---------------------------------------------------------------- sections

def measure(proxy_kind, variant, tls=False):
    """Starts one proxy in front of the upstream (a gateway with `variant`'s settings),
    drives it with wrk and stops it: wrk's figures plus CPU seconds per 100k requests
    and peak RSS."""
    proxy = start_proxy(proxy_kind, [P["upstream"]], GATEWAY_VARIANTS.get(variant, ""), tls,
                        gateway_top=TOP_LEVEL_VARIANTS.get(variant, ""))
    if variant == "gw+fallback":
        force_open()
    port = P.get(proxy_kind, P["gateway"])
    wrk(port, tls, duration=WARMUP)  # connections, caches, allocator and JIT warm
    pids = tree(proxy.pid)
    cpu0 = cpu_seconds(pids)
    started = time.time()
    r = wrk(port, tls)
    wall = time.time() - started
    check_alive(proxy, proxy_kind)
    pids = tree(proxy.pid)
    cpu = cpu_seconds(pids) - cpu0
    r["cpu_per_100k"] = cpu / max(r["requests"], 1) * 100_000
    r["cpu_us_per_request"] = cpu / max(r["requests"], 1) * 1e6
    r["core_busy"] = cpu / wall
    r["rss_mb"] = peak_rss_mb(pids)
    stop(proxy)
    return r


def start_gateway(binary, variant, name, port, admin, wasm=WASM):
    """A gateway with `variant`'s settings on `port`, its plugins loaded from `wasm`."""
    conf = gateway_conf([P["upstream"]], GATEWAY_VARIANTS[variant], name, port=port, admin=admin, wasm=wasm,
                        top=TOP_LEVEL_VARIANTS.get(variant, ""))
    return launch(pinned(1, [binary, "run", "--config", conf]), name, port)


def side_by_side(sides):
    """Two gateways at the same time on CPU 1, each driven by its own wrk on CPU 0.

    sides: two (name, binary, variant, wasm_dir). Both are CPU-bound, so the kernel
    gives each half the core and the ratio of their requests/s is the inverse ratio of
    their CPU per request; a phase of this VM running slow hits both alike, where runs
    one after the other would see it in one of them only. Ports swap every round.
    Returns the second's requests/s and CPU per request as ratios to the first's, a
    list per round."""
    ports = [(P["gateway"], P["admin"]), (P["gateway"] + 10, P["admin"] + 10)]
    (a, *_), (b, *_) = sides
    rps, cpu = [], []
    for round_ in range(int(os.environ.get("PAIRED_ROUNDS", "5"))):
        placed = list(zip(sides, ports if round_ % 2 == 0 else ports[::-1]))
        proxies = [start_gateway(binary, variant, name, port, admin, wasm)
                   for (name, binary, variant, wasm), (port, admin) in placed]
        results = [None, None]

        def drive(i, port, duration=None):
            results[i] = wrk(port, duration=duration)

        warm = [threading.Thread(target=drive, args=(i, port, WARMUP)) for i, (_, (port, _)) in enumerate(placed)]
        for t in warm:
            t.start()
        for t in warm:
            t.join()
        cpu0 = [cpu_seconds(tree(p.pid)) for p in proxies]
        results = [None, None]

        threads = [threading.Thread(target=drive, args=(i, port)) for i, (_, (port, _)) in enumerate(placed)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r, p, c0, ((name, *_), _) in zip(results, proxies, cpu0, placed):
            if r is None:
                raise SystemExit(f"a wrk run failed; logs in {TMP}")
            check_alive(p, name)
            r["cpu_per_100k"] = (cpu_seconds(tree(p.pid)) - c0) / max(r["requests"], 1) * 100_000
            stop(p)
        first, second = results
        rps.append(second["rps"] / first["rps"])
        cpu.append(second["cpu_per_100k"] / first["cpu_per_100k"])
        print(f"  round {round_ + 1} side by side: {a} {first['rps']:.0f} req/s ({first['cpu_per_100k']:.2f} CPU-s/100k), "
              f"{b} {second['rps']:.0f} req/s ({second['cpu_per_100k']:.2f} CPU-s/100k): {b}/{a} {rps[-1]:.3f}",
              flush=True)
    return rps, cpu


def speed_probe():
    """Seconds a fixed CPU loop takes on the proxies' core (CPU 1)."""
    everywhere = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1} if PIN else everywhere)
    started = time.perf_counter()
    total = 0
    for i in range(300_000):
        total += i
    elapsed = time.perf_counter() - started
    os.sched_setaffinity(0, everywhere)
    return elapsed


FASTEST_PROBE = []


def steady(run_once):
    """`run_once()`'s result and which run it was: with BENCH_STEADY=1, the first run
    bracketed by two probes within 10 % of the fastest probe seen, else the last one,
    said so."""
    if not STEADY:
        return run_once(), "run 1"
    if not FASTEST_PROBE:
        FASTEST_PROBE.append(min(speed_probe() for _ in range(20)))
    for attempt in range(1, ATTEMPTS + 1):
        before = speed_probe()
        result = run_once()
        after = speed_probe()
        FASTEST_PROBE[0] = min(FASTEST_PROBE[0], before, after)
        if max(before, after) <= 1.10 * FASTEST_PROBE[0]:
            return result, f"run {attempt}"
    return result, f"{ATTEMPTS} runs, none at full speed"


def throughput():
    upstream = start_upstream()
    start_redis()  # for the gw+cluster row: a fleet link that is really connected
    # "pingora": the smallest Pingora proxy, to separate Pingora's cost from the gateway's.
    # "+tls": the same proxy terminating TLS (TLS 1.3, ECDSA P-256; 32 keep-alive
    # connections, so this is record encryption, not handshakes).
    results = {k: [] for k in ["direct", "nginx", "haproxy", "pingora", *GATEWAY_VARIANTS,
                               "nginx+tls", "haproxy+tls", "gateway+tls"]}
    for round_ in range(ROUNDS):
        for kind in results:
            if kind == "direct":
                wrk(P["upstream"], duration=WARMUP)
                r, which = steady(lambda: dict(wrk(P["upstream"]), cpu_per_100k=0.0, cpu_us_per_request=0.0,
                                               core_busy=float("nan"), rss_mb=0.0))
            else:
                r, which = steady(lambda: measure(kind.removesuffix("+tls"), kind, kind.endswith("+tls")))
            results[kind].append(r)
            print(f"  round {round_ + 1} {kind:12} {r['rps']:>10.0f} req/s  p99 {r['p99_ms']:.2f} ms  ({which})",
                  flush=True)
    paired, _ = side_by_side([("gateway", GATEWAY, "gateway", WASM), ("gw+predicate", GATEWAY, "gw+predicate", WASM)])
    check_alive(upstream, "upstream")
    stop(upstream)
    table = {}
    for kind, runs in results.items():
        table[kind] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    base = table["nginx"]
    print(f"\nThroughput: wrk -t1 -c32 -d{DURATION}s after {WARMUP}s of warm-up, medians of {ROUNDS} interleaved rounds,"
          " proxies on 1 CPU")
    if ROUNDS < 5:
        print(f"  ({ROUNDS} rounds: too few for medians to mean anything; for trying the script only)")
    print(f"{'':13}{'CPU us/req':>11}{'vs nginx':>9}{'core busy':>10}{'req/s':>10}{'vs nginx':>9}"
          f"{'closed-loop p50/p99 ms':>24}{'RSS MB':>8}")
    capped = []
    for kind, r in table.items():
        busy = r["core_busy"]
        cpu_ratio = r["cpu_us_per_request"] / base["cpu_us_per_request"] if kind != "direct" else float("nan")
        busy_text = "-" if kind == "direct" else f"{busy * 100:.0f} %{'' if busy >= SATURATED else ' !'}"
        if kind != "direct" and busy < SATURATED:
            capped.append(kind)
        print(f"{kind:13}{r['cpu_us_per_request']:>11.2f}{cpu_ratio:>9.2f}{busy_text:>10}{r['rps']:>10.0f}"
              f"{r['rps'] / base['rps']:>9.2f}{r['p50_ms']:>14.2f} / {r['p99_ms']:<7.2f}{r['rss_mb']:>8.1f}")
    print("CPU us/req: the proxy's own CPU time (user + system, all its processes) per request: the ratio to read.")
    print("closed-loop p50/p99: wrk's 32 connections at saturation; they restate req/s, they are not latency under"
          " a given load (the incidents below measure that at a fixed rate).")
    if capped:
        print(f"! proxy core under {SATURATED * 100:.0f} % busy: {', '.join(capped)}. Their req/s was capped by the driver or"
              " the upstream on the other core, not by the proxy: compare them by CPU per request, not req/s.")
    table["_notes"] = {"latency": "closed-loop (wrk at saturation)", "unsaturated": capped,
                       "rounds": ROUNDS, "warmup_s": WARMUP}
    cost = 1 - table["gw+predicate"]["rps"] / table["gateway"]["rps"]
    table["predicate_cost_side_by_side"] = {"median": 1 - statistics.median(paired),
                                            "lowest": 1 - max(paired), "highest": 1 - min(paired)}
    side = table["predicate_cost_side_by_side"]
    print(f"\nA WASM predicate on every response costs {cost * 100:.1f} % of the gateway's requests/s (target: at most 10 %);"
          f" side by side on one core: {side['median'] * 100:.1f} % (median of {len(paired)} rounds,"
          f" {side['lowest'] * 100:.1f}-{side['highest'] * 100:.1f} %)")
    print("gw+fallback: every request answered by the WASM fallback (breaker forced open); wrk counts its 200s")
    for kind in ["nginx", "haproxy", "gateway"]:
        tls_cost = table[f"{kind}+tls"]["cpu_us_per_request"] / table[kind]["cpu_us_per_request"] - 1
        print(f"TLS termination costs {kind} {tls_cost * 100:.1f} % more CPU per request")
    return table


INCIDENTS = [
    ("upstream dead 10s", 1, lambda: origin_fault(P["origin1"], "down_for=10s"), None),
    ("upstream slow (2s) 10s", 1, lambda: origin_fault(P["origin1"], "latency=2s"), lambda: origin_fault(P["origin1"], "", "DELETE")),
    ("one of two endpoints dead 10s", 2, lambda: origin_fault(P["origin1"], "down_for=10s"), None),
]
# The gateway's closest equivalent of nginx's max_fails=3 and HAProxy's `check inter
# 500ms fall 3 rise 2` + `error-limit 3`: three failures in a row open the breaker, and
# an active check (whose timeout may not exceed its interval) gates the probes.
GATEWAY_INCIDENT = """    breaker:
      window: { kind: time, size: 10s, buckets: 10 }
      minimum_requests: 10
      failure_rate: 0.5
      consecutive_failures: 3
      slow_call: { duration: 500ms, rate: 0.5 }
      open_duration: 2s
    outlier_detection: { consecutive_failures: 3, ejection: 2s }
    health_check: { path: /health, interval: 500ms, timeout: 500ms, unhealthy_threshold: 3, healthy_threshold: 2, gate_breaker: true }
"""


DETECTION = 2

# What each proxy has to meet these incidents, so that the table is not read as one
# implementation against another where one has a mechanism the other lacks.
MECHANISMS = {
    "nginx": "passive only (open-source nginx): max_fails=3 fail_timeout=2s takes a server out for 2 s and"
             " proxy_next_upstream retries on the next; no active health checks, no circuit breaker, no"
             " slow-call detection (only the 1 s timeouts), no fallback response: with every server out, 502",
    "haproxy": "active checks (inter 500ms fall 3 rise 2) plus observe layer7 error-limit 3 take a server out;"
               " no circuit breaker with a retry hint, no slow-call detection (only the 1 s timeouts), no"
               " fallback response: with every server out, 503",
    "gateway": "circuit breaker (failure rate, consecutive failures, slow calls) answering with its JSON"
               " fallback while open, outlier ejection, active checks gating the probes",
}


def incidents():
    rows = []
    for name, endpoints, begin, end in INCIDENTS:
        for kind in ["nginx", "haproxy", "gateway"]:
            origins = [launch(pinned(0, [ORIGIN, str(P[f"origin{i + 1}"]), f"o{i + 1}"]), f"origin{i + 1}",
                              P[f"origin{i + 1}"]) for i in range(endpoints)]
            servers = [P[f"origin{i + 1}"] for i in range(endpoints)]
            proxy = start_proxy(kind, servers, GATEWAY_INCIDENT)
            with Load(P[kind]) as load:
                time.sleep(5)
                t0 = time.time()
                begin()
                time.sleep(10)
                if end:
                    end()
                t1 = time.time()
                time.sleep(10)
            check_alive(proxy, kind)
            stop(proxy)
            for o in origins:
                stop(o)
            during = [r for r in load.records if t0 <= r[0] < t1]
            # Once detection had time (the first 1 s timeouts, then 1 s): does anyone still wait?
            settled = [r for r in during if r[0] >= t0 + DETECTION]
            errors = sum(1 for r in load.records if not r[2])
            after = sorted(r for r in load.records if r[0] >= t1 and r[3])
            recovery = (after[0][0] - t1) if after else float("nan")
            row = {"scenario": name, "proxy": kind, "requests": len(load.records), "errors": errors, "retried": load.retried,
                   "p99_during_ms": p99([r[1] for r in during]),
                   "p99_settled_ms": p99([r[1] for r in settled]), "recovery_s": recovery}
            rows.append(row)
            print(f"  {name:30} {kind:8} errors {errors:5} / {len(load.records):5}   p99 during {row['p99_during_ms']:8.1f} ms, after {DETECTION} s {row['p99_settled_ms']:7.1f} ms   "
                  f"first upstream success after recovery {recovery:5.2f} s", flush=True)
    print("Mechanisms each proxy brings (the closest equivalent configured; configuration is not implementation):")
    for kind, text in MECHANISMS.items():
        print(f"  {kind:8} {text}")
    return rows


def admin_metric(series):
    """A sample of the gateway's /metrics (0 when absent), through its admin listener."""
    with urllib.request.urlopen(f"http://127.0.0.1:{P['admin']}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def children(pid):
    return set(tree(pid)) - {pid}


def reloads():
    rows = []
    origin = launch(pinned(0, [ORIGIN, str(P["origin1"]), "o1"]), "origin1", P["origin1"])
    applied_series = 'gateway_config_reloads_total{result="success"}'
    for kind in ["nginx", "haproxy", "gateway"]:
        proxy = start_proxy(kind, [P["origin1"]])
        time.sleep(0.5)
        # Applied reloads: the gateway counts them; nginx and HAProxy start a new worker
        # process for each (one worker each here), so new worker pids count theirs.
        applied_before = admin_metric(applied_series) if kind == "gateway" else 0.0
        workers_seen = children(proxy.pid)
        new_workers = 0
        with Load(P[kind], rate=200) as load:
            time.sleep(1)
            for i in range(100):
                if kind == "gateway":
                    # Alternate a real change, so each reload applies a new config.
                    gateway_conf([P["origin1"]], f"    max_concurrent_requests: {1000 + i % 2}\n")
                    os.kill(proxy.pid, signal.SIGHUP)
                elif kind == "nginx":
                    os.kill(proxy.pid, signal.SIGHUP)
                else:
                    os.kill(proxy.pid, signal.SIGUSR2)
                time.sleep(0.1)
                if kind != "gateway":
                    now = children(proxy.pid)
                    new_workers += len(now - workers_seen)
                    workers_seen |= now
            time.sleep(1)
        check_alive(proxy, kind)
        if kind == "gateway":
            applied = int(admin_metric(applied_series) - applied_before)
            how = "its reload counter"
        else:
            new_workers += len(children(proxy.pid) - workers_seen)
            applied = new_workers
            how = "new worker processes"
        stop(proxy)
        failed = sum(1 for r in load.records if not r[2])
        rows.append({"proxy": kind, "requests": len(load.records), "failed": failed, "retried": load.retried,
                     "reloads_applied": applied})
        print(f"  {kind:8} 100 reload signals, {applied} reloads applied (by {how}), under ~200 req/s:"
              f" {failed} failed of {len(load.records)}"
              f" ({load.retried} retried once after a keep-alive connection closed)", flush=True)
        if applied < 100:
            print(f"           {100 - applied} signals did not each make a reload (coalesced or refused):"
                  " the failure count covers fewer reloads", flush=True)
    check_alive(origin, "origin1")
    stop(origin)
    return rows


def main():
    for tool in ["nginx", "haproxy", "wrk"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: make bench installs it (apt-get install nginx-light haproxy wrk)")
    for binary in [GATEWAY, ORIGIN, PLAIN, os.path.join(WASM, "status_latency_predicate.wasm")]:
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} is missing: make bench builds it")
    os.makedirs(OUT, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count(), "pinned": bool(PIN), "kernel": os.uname().release}}
    try:
        if "throughput" in SECTIONS:
            print("Throughput", flush=True)
            report["throughput"] = throughput()
        if "incidents" in SECTIONS:
            print("\nIncidents (fixed rate ~200 req/s from 200 keep-alive clients)", flush=True)
            report["incidents"] = incidents()
            report["incident_mechanisms"] = MECHANISMS
        if "reload" in SECTIONS:
            print("\nReload under load", flush=True)
            report["reload"] = reloads()
    finally:
        for p in PROCS:
            stop(p)
    with open(os.path.join(OUT, "load.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(OUT, "load.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "name", "metric", "value"])
        for kind, r in report.get("throughput", {}).items():
            for k, v in r.items():
                w.writerow(["throughput", kind, k, v])
        for r in report.get("incidents", []):
            for k in ["errors", "p99_during_ms", "p99_settled_ms", "recovery_s"]:
                w.writerow(["incident", f"{r['scenario']} / {r['proxy']}", k, r[k]])
        for r in report.get("reload", []):
            w.writerow(["reload", r["proxy"], "failed", r["failed"]])
            w.writerow(["reload", r["proxy"], "retried", r["retried"]])
            w.writerow(["reload", r["proxy"], "reloads_applied", r["reloads_applied"]])
    print(f"\nwritten: {OUT}/load.json, load.csv (process logs in {TMP})")


if __name__ == "__main__":
    main()
