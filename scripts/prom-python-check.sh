#!/usr/bin/env bash
# Runs tests/prometheus.rs with the strict OpenMetrics parser of the Python
# `prometheus_client` package: creates a virtual environment under
# $CARGO_TARGET_DIR/prom-venv, installs prometheus_client from PyPI into it, points
# AXON_PROM_PYTHON at it and runs `cargo test --features prometheus --test prometheus`.
# Exits non-zero on any failure. The parser test is #[ignore]d in a plain `cargo test`
# (it needs Python); run explicitly without AXON_PROM_PYTHON it fails rather than skip.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
venv=$CARGO_TARGET_DIR/prom-venv
# The version the checks were written against; override to try another.
version=${AXON_PROM_CLIENT_VERSION:-0.26.0}

if ! "$venv/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(m.version('prometheus_client') != '$version')" 2>/dev/null; then
    echo "prom-python-check: creating $venv with prometheus_client==$version"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "prometheus_client==$version"
fi
"$venv/bin/python" -c 'from prometheus_client.openmetrics.parser import text_string_to_metric_families'

export AXON_PROM_PYTHON=$venv/bin/python
cargo test --features prometheus --test prometheus -- --include-ignored --nocapture
