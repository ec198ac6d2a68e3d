#!/usr/bin/env python3
"""A/B of builds under the same load, in one run: what a change did to throughput.

    python3 benches/load/ab.py NAME=KIND:BINARY[:VARIANT[:WASM_DIR]] ...

KIND is `pingora` (a plain-pingora binary) or `gateway`; VARIANT one of run.py's gateway
rows (`gateway`, `gw+predicate`, `gw+fallback`); WASM_DIR the plugins to load with that
binary (default plugins/target/wasm32-wasip2/release), for builds of another contract.
Every variant gets the same wrk load as run.py's throughput section (proxy on CPU 1,
wrk and the upstream on CPU 0), interleaved over AB_ROUNDS rounds (default 5) of
BENCH_DURATION seconds; prints each run, the medians, and the median over rounds of
each variant's requests/s as a ratio to the first variant's in the same round, which
holds up better than the plain medians when the machine's speed drifts during a run.

BENCH_STEADY=1 keeps only runs made at the machine's full speed (see run.py); use short
runs (BENCH_DURATION=3) with it.

Example (the LTO figures in docs/PERFORMANCE.md):
    python3 benches/load/ab.py old=gateway:/tmp/gateway-cgu4 new=gateway:target/release/gateway
"""
import importlib.util
import os
import statistics
import sys

spec = importlib.util.spec_from_file_location("run", os.path.join(os.path.dirname(__file__), "run.py"))
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)


def main():
    variants = [arg.split("=", 1) for arg in sys.argv[1:]]
    if not variants or any(len(v) != 2 for v in variants):
        raise SystemExit(__doc__)
    rounds = int(os.environ.get("AB_ROUNDS", "5"))
    plugins = run.PLUGINS
    run.start_upstream()
    results = {name: [] for name, _ in variants}
    try:
        for round_ in range(rounds):
            for name, desc in variants:
                kind, binary, *rest = desc.split(":")
                variant = rest[0] if rest else "gateway"
                if kind == "pingora":
                    run.PLAIN = binary
                else:
                    run.GATEWAY = binary
                    run.PLUGINS = plugins.replace(run.WASM, rest[1]) if len(rest) > 1 else plugins
                r, which = run.steady(lambda: run.measure(kind, variant))
                results[name].append(r)
                print(f"round {round_ + 1} {name:20} CPU {r['cpu_us_per_request']:.2f} us/req  {r['rps']:>9.0f} req/s"
                      f" (core {r['core_busy'] * 100:.0f} % busy)  closed-loop p99 {r['p99_ms']:.2f} ms  ({which})",
                      flush=True)
    finally:
        for p in run.PROCS:
            run.stop(p)
    print()
    first = results[variants[0][0]]
    for name, runs in results.items():
        ratio = statistics.median(r["rps"] / f["rps"] for r, f in zip(runs, first))
        cpu_ratio = statistics.median(r["cpu_us_per_request"] / f["cpu_us_per_request"] for r, f in zip(runs, first))
        print(f"{name:20} median CPU {statistics.median(r['cpu_us_per_request'] for r in runs):.2f} us/req"
              f" ({cpu_ratio:.3f}x {variants[0][0]}'s in the same round),"
              f" {statistics.median(r['rps'] for r in runs):>9.0f} req/s ({ratio:.3f}x)")


if __name__ == "__main__":
    main()
