#!/usr/bin/env python3
"""What a large plugin costs at start: time to ready and RSS of `gateway run`, time and
peak RSS of `gateway check`, without plugins, with the Rust status-latency predicate and
with the Python predicate built by scripts/build-python-predicate.sh (an 18 MB
componentize-py component). Each row is run ROUNDS times (default 3); the range is printed.

    python3 benches/load/plugin_start.py [GATEWAY_BINARY]

Rows `cold` start with an empty plugin cache directory, `cached` with the one the
previous run filled. Needs the Rust plugins (`make plugins`) and the Python fixture.

Then (when nginx is installed) requests during a reload that brings the Python predicate
in, compiled cold and then from the cache: run.py's fixed-rate clients (RATE req/s, default 500) through the
gateway to an nginx origin; latency of the requests sent while the reload compiled
against those sent in as long a window before it, ROUNDS times."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GATEWAY = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "gateway")
RUST = os.path.join(ROOT, "target", "plugins", "wasm32-wasip2", "release", "status_latency_predicate.wasm")
if not os.path.exists(RUST):
    RUST = os.path.join(ROOT, "plugins", "target", "wasm32-wasip2", "release", "status_latency_predicate.wasm")
PYTHON = os.path.join(ROOT, "target", "py-predicate", "predicate.wasm")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
PORT, ADMIN, ORIGIN_PORT = 18480, 18481, 18482
RATE = int(os.environ.get("RATE", "500"))
SECTIONS = os.environ.get("SECTIONS", "start,reload").split(",")
TMP = tempfile.mkdtemp(prefix="plugin-start-")
CACHE = os.path.join(TMP, "cache")


def conf(wasm, cache, origin="127.0.0.1:9"):
    path = os.path.join(TMP, "gateway.yaml")
    plugins = predicate = ""
    if wasm:
        plugins = f'plugins:\n  rules: {{ path: "{wasm}", kind: predicate, limits: {{ memory: 64MiB }} }}\n'
        predicate = "    breaker: { predicate: rules }\n"
    cache_key = f', plugin_cache_dir: "{cache}"' if cache else ""
    with open(path, "w") as f:
        f.write(f"""server: {{ threads: 1, access_log: false, watch_config: false, upgrade_socket: "{TMP}/upgrade.sock"{cache_key} }}
listeners: [{{ address: "127.0.0.1:{PORT}" }}]
admin: {{ address: "127.0.0.1:{ADMIN}" }}
{plugins}upstreams:
  up:
    endpoints: ["{origin}"]
{predicate}routes:
  - {{ upstream: up }}
""")
    return path


def ready():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def rss_mb(pid):
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return fields


def run_once(wasm, cache):
    path = conf(wasm, cache)
    started = time.monotonic()
    p = subprocess.Popen([GATEWAY, "run", "--config", path], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(TMP, "gateway.log"), "w"))
    try:
        while not ready():
            if p.poll() is not None:
                sys.exit(f"gateway exited ({p.returncode}); see {TMP}/gateway.log")
            if time.monotonic() - started > 60:
                sys.exit("gateway not ready after 60 s")
            time.sleep(0.01)
        took = time.monotonic() - started
        # Past the gateway's allocator purge (1.5 s after plugins load, plugin/mod.rs).
        time.sleep(3)
        mem = rss_mb(p.pid)
        return took, mem["Rss"], mem.get("Anonymous", 0.0)
    finally:
        p.terminate()
        p.wait()


def check_once(wasm, cache):
    path = conf(wasm, cache)
    started = time.monotonic()
    p = subprocess.Popen([GATEWAY, "check", "--config", path], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"gateway check failed ({status})")
    return time.monotonic() - started, usage.ru_maxrss / 1024


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def reload_once(cold):
    """Latencies (ms) of requests sent while a reload compiles the Python predicate, and
    of those sent in a window as long just before it; and the reload's duration."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run import Load
    if cold:
        shutil.rmtree(CACHE, ignore_errors=True)
    origin = f"127.0.0.1:{ORIGIN_PORT}"
    path = conf(None, CACHE, origin)
    p = subprocess.Popen([GATEWAY, "run", "--config", path], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(TMP, "gateway.log"), "w"))
    try:
        while not ready():
            time.sleep(0.01)
        with Load(PORT, rate=RATE, workers=100) as load:
            # Longer than a reload takes: the window before it is steady load only.
            time.sleep(12)
            conf(PYTHON, CACHE, origin)
            started = time.time()
            p.send_signal(signal.SIGHUP)
            while b"config reloaded" not in open(os.path.join(TMP, "gateway.log"), "rb").read():
                if time.time() - started > 60:
                    sys.exit("reload did not finish in 60 s")
                time.sleep(0.01)
            done = time.time()
            time.sleep(1)
        took = done - started
        during = [r[1] * 1000 for r in load.records if started <= r[0] < done]
        before = [r[1] * 1000 for r in load.records if started - took <= r[0] < started]
        failed = sum(1 for r in load.records if not r[2])
        return took, before, during, failed
    finally:
        p.terminate()
        p.wait()


def reloads():
    if not shutil.which("nginx") or not os.path.exists(PYTHON):
        print("reload row skipped: needs nginx and the Python fixture", file=sys.stderr)
        return
    nginx_conf = os.path.join(TMP, "nginx.conf")
    with open(nginx_conf, "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {TMP}/nginx.pid; error_log {TMP}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; server {{ listen 127.0.0.1:{ORIGIN_PORT}; location / {{ return 200 "ok"; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", nginx_conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for cold in [True, False]:
            what = "compiles the Python predicate (cold cache)" if cold else "loads the Python predicate from the cache"
            print(f"\nrequests at {RATE}/s while a reload {what}")
            print(f"{'round':>6}{'reload s':>10}{'before p50/p99/max ms':>26}{'during p50/p99/max ms':>26}{'failed':>8}")
            for i in range(ROUNDS):
                took, before, during, failed = reload_once(cold)
                fmt = lambda v: f"{percentile(v, 0.5):.2f}/{percentile(v, 0.99):.2f}/{max(v, default=float('nan')):.2f}"
                print(f"{i + 1:>6}{took:>10.2f}{fmt(before):>26}{fmt(during):>26}{failed:>8}")
    finally:
        nginx.terminate()
        nginx.wait()


def span(values, fmt):
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def main():
    # grep, not Python: reading the binary here would raise the RSS high-water mark the
    # `check` children inherit.
    supports_cache = subprocess.run(["grep", "-q", "plugin_cache_dir", GATEWAY]).returncode == 0
    rows = [("no plugins", None, False), ("Rust predicate", RUST, False)]
    if os.path.exists(PYTHON):
        rows.append(("Python predicate, cold", PYTHON, False))
        if supports_cache:
            rows.append(("Python predicate, cached", PYTHON, True))
    else:
        print(f"{PYTHON} missing: run scripts/build-python-predicate.sh", file=sys.stderr)
    print(f"{GATEWAY}, {ROUNDS} rounds")
    if "start" not in SECTIONS:
        rows = []
    print(f"{'':28}{'run: ready s':>14}{'RSS MB':>14}{'anon MB':>14}{'check s':>14}{'check peak MB':>16}")
    for name, wasm, cached in rows:
        runs, checks = [], []
        for _ in range(ROUNDS):
            cache = CACHE if supports_cache else None
            if cache and not cached:
                shutil.rmtree(CACHE, ignore_errors=True)
            runs.append(run_once(wasm, cache))
            if cache and not cached:
                shutil.rmtree(CACHE, ignore_errors=True)
            checks.append(check_once(wasm, cache))
        print(f"{name:28}{span([r[0] for r in runs], '{:.2f}'):>14}{span([r[1] for r in runs], '{:.0f}'):>14}"
              f"{span([r[2] for r in runs], '{:.0f}'):>14}{span([c[0] for c in checks], '{:.2f}'):>14}"
              f"{span([c[1] for c in checks], '{:.0f}'):>16}")
    if supports_cache and "reload" in SECTIONS:
        reloads()
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
