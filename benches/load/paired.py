#!/usr/bin/env python3
"""Two gateway builds or variants compared side by side, at the same time, on one core.

    python3 benches/load/paired.py A=BINARY[:VARIANT[:WASM_DIR]] B=BINARY[:VARIANT[:WASM_DIR]]

Both gateways run at once, pinned to CPU 1, each driven by its own wrk (-t1 -c32) on
CPU 0 for BENCH_DURATION seconds (default 10), in PAIRED_ROUNDS rounds (default 5)
that swap their ports (run.py's `side_by_side`). Both are CPU-bound, so each gets half
the core and B/A of their requests/s is A/B of their CPU per request: what `ab.py`
measures by running them one after the other, but far less sensitive to a VM that
slows down for seconds at a time, since a slow phase hits both alike. VARIANT is one
of run.py's gateway rows (`gateway`, `gw+predicate`, `gw+fallback`); WASM_DIR the plugins to
load with that binary (default plugins/target/wasm32-wasip2/release), for builds of
another contract. `gw+cluster` runs the fleet link to a local redis-server (started here).

Example: what a WASM predicate costs the current build
    python3 benches/load/paired.py plain=target/release/gateway pred=target/release/gateway:gw+predicate
What the fleet link costs (`cluster:` on against off)
    python3 benches/load/paired.py alone=target/release/gateway fleet=target/release/gateway:gw+cluster
"""
import importlib.util
import os
import statistics
import sys

spec = importlib.util.spec_from_file_location("run", os.path.join(os.path.dirname(__file__), "run.py"))
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)


def main():
    args = [arg.split("=", 1) for arg in sys.argv[1:]]
    if len(args) != 2 or any(len(a) != 2 for a in args):
        raise SystemExit(__doc__)
    sides = []
    for name, desc in args:
        binary, *rest = desc.split(":")
        sides.append((name, binary, rest[0] if rest else "gateway", rest[1] if len(rest) > 1 else run.WASM))
    run.start_upstream()
    if any(variant in run.TOP_LEVEL_VARIANTS for _, _, variant, _ in sides):
        run.start_redis()
    try:
        rps, cpu = run.side_by_side(sides)
    finally:
        for p in run.PROCS:
            run.stop(p)
    (a, *_), (b, *_) = sides
    print(f"\n{b} / {a}, median of {len(rps)} rounds: requests/s {statistics.median(rps):.3f}x "
          f"(range {min(rps):.3f}-{max(rps):.3f}), CPU per request {statistics.median(cpu):.3f}x")


if __name__ == "__main__":
    main()
