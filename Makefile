# Edge gateway: every entry point a person or CI needs.
#   make demo    the gateway in front of simulated upstreams with fault injection
#   make test    fmt check, clippy -D warnings, docs (broken links denied), alert-rule
#                tests, the Python and JavaScript plugins (built once, then only when
#                their sources or toolchains change), the whole test suite
#   make check   validate every shipped config with `gateway check`
#   make plugins build the example WebAssembly plugins (plugins/): the Rust ones for
#                wasm32-wasip2, the Python and JavaScript ones with componentize-py and
#                ComponentizeJS (pinned, installed under target/; `make polyglot`)
#   make bench   criterion benches, reload benchmark, the side-by-side load run
#                against nginx and HAProxy (installs nginx, haproxy, wrk when missing),
#                memory per idle connection (HTTP/1 and h2, against the same peers),
#                open-loop latency at 25/50/75 % of nginx's capacity (oha, from crates.io),
#                and start time and memory with a large (componentize-py) plugin
#                (installs componentize-py in a venv under target/)
#   make fuzz    every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (default 60) on
#                the corpora in fuzz/corpus/ (nightly; installs cargo-fuzz when missing;
#                not part of `make test`)
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all demo test setup lint fmt check build alerts-test bench bench-peers plugins polyglot fuzz

all: test

# Native build prerequisites (pingora builds C code with cmake), promtool for the alert
# rule tests, and the plugin target.
setup:
	@bash scripts/ensure-packages.sh cmake:cmake cc:build-essential promtool:prometheus redis-server:redis-server
	@# RUSTUP_AUTO_INSTALL=0 on these machines: add the listed target ourselves (quick when present).
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

build: setup
	$(CARGO) build --workspace --all-targets

demo: setup
	$(CARGO) run -p gateway -- demo

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --workspace

check: setup
	@for f in config/*.yaml; do $(CARGO) run -q -p gateway -- check --config $$f || exit 1; done

plugins: setup polyglot
	$(CARGO) build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
	@ls -1 plugins/target/wasm32-wasip2/release/*.wasm

# The Python and JavaScript plugins, into target/polyglot/ (the tests load them there).
# Needs python3 with venv and node with npm (a node 20 comes from npm into target/ when the
# system's is older, as on Debian 12); the toolchains come from PyPI and npm.
polyglot:
	@bash scripts/ensure-packages.sh python3:python3 node:nodejs npm:npm
	@# Debian's python3 makes venvs only with python3-venv (ensurepip).
	@python3 -c 'import ensurepip' 2>/dev/null || bash scripts/ensure-packages.sh _no_ensurepip:python3-venv
	bash scripts/build-polyglot-plugins.sh

# Alert rules: syntax and unit tests (promtool comes from Debian's prometheus package).
alerts-test: setup
	promtool check rules config/prometheus/alerts.yml
	promtool test rules config/prometheus/alerts_test.yml

test: lint alerts-test polyglot
	$(CARGO) test --workspace

# Peers for side-by-side measurements, from Debian.
bench-peers:
	@bash scripts/ensure-packages.sh nginx:nginx-light haproxy:haproxy wrk:wrk python3:python3
	@command -v oha >/dev/null || [ -x "$$HOME/.cargo/bin/oha" ] || $(CARGO) install oha --locked --version 1.16.0

bench: setup bench-peers plugins
	$(CARGO) build --release -p gateway -p gateway-benches --bins
	$(CARGO) bench -p gateway-benches --bench breaker
	$(CARGO) bench -p gateway-benches --bench plugin
	$(CARGO) bench -p gateway-benches --bench routes
	$(CARGO) bench -p gateway-benches --bench reload
	$(CARGO) bench -p gateway-benches --bench replay
	python3 benches/load/run.py
	python3 benches/load/idle.py
	python3 benches/load/openloop.py
	bash scripts/build-python-predicate.sh
	python3 benches/load/plugin_start.py

# Fuzzing: one target after another, each for FUZZ_SECONDS, growing its corpus in
# fuzz/corpus/<target>/ (hand-written inputs in fuzz/seeds/<target>/ are read too); a
# crash stops here, its input saved in fuzz/artifacts/<target>/.
# Without a network where the machine allows it, so that endpoint names in fuzzed
# configs are never looked up.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= config path routes authority forwarded cidr plugin_answer
FUZZ_ISOLATE = $(shell unshare -rn true 2>/dev/null && echo unshare -rn)

fuzz: setup
	@rustup toolchain list | grep -q '^nightly' || { echo "make fuzz needs the nightly toolchain: rustup toolchain install nightly --profile minimal" >&2; exit 1; }
	@$(CARGO) +nightly fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	$(CARGO) +nightly fuzz build --fuzz-dir fuzz
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
		seeds=$$(test -d fuzz/seeds/$$t && echo fuzz/seeds/$$t); \
		$(FUZZ_ISOLATE) $(CARGO) +nightly fuzz run --fuzz-dir fuzz $$t fuzz/corpus/$$t $$seeds -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 || exit 1; \
	done
