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
svg=$(dirname "$bin")/multipath.svg
run "$bin" lab exec --prefix "$prefix" -- "$bin" multipath --svg "$svg" "$target"
# The picture, as a browser shows it (headless Chromium, local file only).
if command -v chromium >/dev/null; then
	png=${svg%.svg}.png profile=$(mktemp -d)
	# The window is the picture's own size (the root element's width and height).
	size=$(head -c 600 "$svg" | grep -o 'width="[0-9]*" height="[0-9]*"' | head -1 | tr -dc '0-9 ' | tr ' ' ,)
	timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
		--user-data-dir="$profile" --window-size="${size:-1600,900}" --screenshot="$png" "file://$(realpath "$svg")" >/dev/null 2>&1 &&
		printf '\nmultipath graph: %s (screenshot %s)\n' "$svg" "$png"
	rm -rf "$profile"
fi
run "$bin" lab down --prefix "$prefix"
trap - EXIT
