//! Benchmarks live in benches/ (criterion) and load/ (scripts against real peers).
