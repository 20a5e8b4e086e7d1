#!/usr/bin/env bash
# make demo: bring the lab up, run turnpath inside the lab's client namespace, bring it down.
# The lab is removed on every exit path, Ctrl-C included.
set -euo pipefail
bin=${1:?binary} prefix=${2:?prefix} target=${3:?target}
if [ "$(id -u)" -ne 0 ]; then echo "make demo: needs root (network namespaces, BPF)" >&2; exit 3; fi
down() { "$bin" lab down --prefix "$prefix" >/dev/null 2>&1 || true; }
trap down EXIT
trap 'exit 130' INT TERM
run() { printf '\n$ %s\n' "$*"; "$@"; }

run "$bin" lab up --profile fast --prefix "$prefix"
run "$bin" lab exec --prefix "$prefix" -- "$bin" check "$target"
run "$bin" lab exec --prefix "$prefix" -- "$bin" trace "$target"
run "$bin" lab exec --prefix "$prefix" -- "$bin" trace --payload turn --engine socket fd51:1:2::5
run "$bin" lab down --prefix "$prefix"
trap - EXIT
