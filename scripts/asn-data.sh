#!/usr/bin/env bash
# Fetches the offline AS dataset the tests and benchmarks use: the npm package
# @ip-location-db/asn (start,end,asn,org CSVs, ~500 k ranges), unpacked into DIR
# (default .cache/ip-location-db). Idempotent; without npm it says so and leaves the
# tests that need it to skip.
set -euo pipefail
dir=${1:-.cache/ip-location-db}
[ -f "$dir/package/asn-ipv4.csv" ] && exit 0
if ! command -v npm >/dev/null; then
  echo "asn-data: npm not found: the offline AS dataset tests will skip (apt-get install npm)" >&2
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack --silent @ip-location-db/asn >/dev/null 2>&1); then
  echo "asn-data: npm pack @ip-location-db/asn failed: the offline AS dataset tests will skip" >&2
  exit 0
fi
tar -xzf "$tmp"/ip-location-db-asn-*.tgz -C "$dir"
echo "asn-data: $(cat "$dir/package/asn-ipv4.csv" "$dir/package/asn-ipv6.csv" | wc -l) ranges in $dir/package"
