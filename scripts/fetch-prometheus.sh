#!/usr/bin/env bash
# Unpacks Debian's `prometheus` package (Prometheus 2.42 server and promtool) under
# $CARGO_TARGET_DIR/prometheus-deb, without installing it system-wide and without starting
# any daemon, and prints the directory holding the two binaries.
#
# Used by promtool-check.sh and prometheus-e2e.sh. Needs apt-get and dpkg (Debian); runs
# `apt-get update` once when the package lists do not know the package yet (that needs
# root). Exits non-zero, saying why, when anything is missing: it never skips.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
dest=$target/prometheus-deb
bin=$dest/usr/bin

if [[ -x $bin/promtool && -x $bin/prometheus ]]; then
    echo "$bin"
    exit 0
fi

for tool in apt-get dpkg; do
    if ! command -v "$tool" >/dev/null; then
        echo "fetch-prometheus: $tool not found; this needs Debian's prometheus package" >&2
        exit 1
    fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the current directory; as root it warns that the _apt
# user cannot write there, and downloads anyway.
if ! (cd "$tmp" && apt-get download prometheus) >&2; then
    echo "fetch-prometheus: package lists do not know prometheus yet; apt-get update" >&2
    apt-get update >&2
    (cd "$tmp" && apt-get download prometheus) >&2
fi
mkdir -p "$target"
rm -rf "$dest.partial"
dpkg -x "$tmp"/prometheus_*.deb "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
"$bin/promtool" --version >&2
"$bin/prometheus" --version >&2
echo "$bin"
