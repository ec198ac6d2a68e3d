#!/usr/bin/env python3
"""What a large plugin costs at start: time to ready and RSS of `gateway run`, time and
peak RSS of `gateway check`, without plugins, with the Rust status-latency predicate and
with the Python predicate built by scripts/build-python-predicate.sh (an 18 MB
componentize-py component). Each row is run ROUNDS times (default 3); the range is printed.

    python3 benches/load/plugin_start.py [GATEWAY_BINARY]

Rows `cold` start with an empty plugin cache directory, `cached` with the one the
previous run filled. Needs the Rust plugins (`make plugins`) and the Python fixture."""

import os
import resource
import shutil
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
PORT, ADMIN = 18480, 18481
TMP = tempfile.mkdtemp(prefix="plugin-start-")
CACHE = os.path.join(TMP, "cache")


def conf(wasm, cache):
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
    endpoints: ["127.0.0.1:9"]
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
        time.sleep(1)  # let start-up threads finish before reading memory
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
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
