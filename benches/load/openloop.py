#!/usr/bin/env python3
"""Latency at a fraction of capacity (issue 22, part 5), open loop: nginx, HAProxy and the
gateway, each pinned to CPU 1 with one worker, in front of the fixed-body nginx upstream
(run.py's peers and configs); oha and the upstream on CPU 0.

First nginx's saturation rate (wrk -t1 -c32, OPENLOOP_PROBE seconds, the median of three
runs), then, for 25 %, 50 % and 75 % of it, `oha -q RATE -c 64 --latency-correction`
for OPENLOOP_DURATION seconds against each proxy in turn (the order rotates with the
rate), reporting p50 / p99 / p99.9 and the gateway's ratios to nginx. Open loop: requests
leave on a fixed schedule and latency is counted from when each was due
(--latency-correction), so a stall shows up in the percentiles instead of slowing the
client down. Targets (issue 22): gateway p99 at most 1.5x nginx's, p99.9 at most 2x.

Run: python3 benches/load/openloop.py (after `cargo build --release -p gateway -p
gateway-benches --bins`; `make bench` runs it and installs oha from crates.io when
missing). Environment: OPENLOOP_DURATION (default 15), OPENLOOP_PROBE (default 5),
OPENLOOP_SHARES (default "25,50,75"), OPENLOOP_PROXIES (default "nginx,haproxy,gateway").
Results: stdout and target/bench/openloop.json.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402  (the peers, their configs and process helpers)

DURATION = int(os.environ.get("OPENLOOP_DURATION", "15"))
PROBE = int(os.environ.get("OPENLOOP_PROBE", "5"))
SHARES = [int(s) for s in os.environ.get("OPENLOOP_SHARES", "25,50,75").split(",")]
PROXIES = os.environ.get("OPENLOOP_PROXIES", "nginx,haproxy,gateway").split(",")
OHA = shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")


def oha(port, rate):
    """One open-loop run: latency percentiles in ms, and how many requests failed."""
    cmd = R.pinned(0, [OHA, "-z", f"{DURATION}s", "-q", str(rate), "-c", "64", "--latency-correction",
                       "--no-tui", "--output-format", "json", f"http://127.0.0.1:{port}/"])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=DURATION + 60)
    if out.returncode != 0:
        raise SystemExit(f"oha failed ({out.returncode}): {out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    pct = report["latencyPercentiles"]
    statuses = report.get("statusCodeDistribution", {})
    ok = statuses.get("200", 0)
    # oha counts the requests still in flight when the duration ends as "aborted due to
    # deadline": not the proxy's doing.
    errors = {k: v for k, v in report.get("errorDistribution", {}).items() if "deadline" not in k}
    failed = sum(statuses.values()) - ok + sum(errors.values())
    return {"p50_ms": pct["p50"] * 1000, "p99_ms": pct["p99"] * 1000, "p999_ms": pct["p99.9"] * 1000,
            "requests": ok, "failed": failed, "errors": errors, "rps": report["summary"]["requestsPerSec"]}


def main():
    if not os.path.exists(OHA):
        raise SystemExit("oha is missing: make bench installs it (cargo install oha --locked)")
    if not os.path.exists(R.GATEWAY):
        raise SystemExit(f"{R.GATEWAY} is missing: cargo build --release -p gateway -p gateway-benches --bins")
    os.makedirs(R.OUT, exist_ok=True)
    report = {"duration_s": DURATION, "rates": []}
    try:
        R.start_upstream()
        nginx = R.start_proxy("nginx", [R.P["upstream"]])
        R.wrk(R.P["nginx"], duration=2)
        saturation = statistics.median(R.wrk(R.P["nginx"], duration=PROBE)["rps"] for _ in range(3))
        R.stop(nginx)
        report["nginx_saturation_rps"] = saturation
        print(f"nginx saturates at {saturation:.0f} req/s (wrk -t1 -c32, median of 3 x {PROBE}s)\n")
        print(f"{'rate':>16}  " + "".join(f"{p + ' p50 / p99 / p99.9 ms':>34}" for p in PROXIES)
              + f"{'gateway/nginx p99, p99.9':>28}", flush=True)
        for i, share in enumerate(SHARES):
            rate = int(saturation * share / 100)
            rows = {}
            order = PROXIES[i % len(PROXIES):] + PROXIES[:i % len(PROXIES)]
            for kind in order:
                proxy = R.start_proxy(kind, [R.P["upstream"]])
                port = R.P[kind]
                R.wrk(port, duration=2)  # warm: connections, pools, allocator
                rows[kind] = oha(port, rate)
                R.check_alive(proxy, kind)
                R.stop(proxy)
            line = "".join(f"{r['p50_ms']:>14.2f} / {r['p99_ms']:.2f} / {r['p999_ms']:<8.2f}"
                           for r in (rows[p] for p in PROXIES))
            ratio = ""
            if "gateway" in rows and "nginx" in rows:
                g, n = rows["gateway"], rows["nginx"]
                ratio = f"{g['p99_ms'] / n['p99_ms']:>12.2f}x, {g['p999_ms'] / n['p999_ms']:.2f}x"
            failed = sum(r["failed"] for r in rows.values())
            print(f"{share:>3} % {rate:>7}/s  {line}{ratio}" + (f"  ({failed} failed)" if failed else ""), flush=True)
            report["rates"].append({"share": share, "rate": rate, **{k: v for k, v in rows.items()}})
    finally:
        R.stop_all()
    R.write_report("openloop", report)


if __name__ == "__main__":
    main()
