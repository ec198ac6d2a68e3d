#!/usr/bin/env bash
# Builds the Python failure predicate in benches/plugins/python-predicate/ with
# componentize-py (pinned) into target/py-predicate/predicate.wasm: a large component
# (CPython inside) to measure plugin start time and memory with (docs/PERFORMANCE.md).
# Everything it installs stays under target/ (a venv in target/py-toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."
COMPONENTIZE_PY_VERSION=0.25.1
venv=target/py-toolchain
out=target/py-predicate
if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
	python3 -m venv "$venv"
	"$venv/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
mkdir -p "$out"
"$venv/bin/componentize-py" -d wit -w failure-predicate componentize \
	-p benches/plugins/python-predicate app -o "$out/predicate.wasm"
ls -l "$out/predicate.wasm"
