#!/usr/bin/env bash
# Installs Debian packages whose commands are missing: ensure-packages.sh cmd:package ...
# As root with apt-get it installs them; otherwise it prints the command and fails.
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing: ${missing[*]} -- run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
