#!/usr/bin/env bash
# End to end: a real Prometheus server scrapes the ingest example's /metrics.
#
# Starts `examples/ingest --serve-seconds 60` (a short run of its own HTTP clients on an
# ephemeral loopback port, then it keeps serving, /metrics included),
# starts Prometheus 2.42 from Debian's package (fetch-prometheus.sh; no system install, no
# daemon) on 127.0.0.1 with a temporary storage directory and a 1 s scrape of the example,
# then asks the Prometheus HTTP API for `buffer_pool_live_bytes` and for tenant-0's
# `buffer_pool_soft_limit_exceeded_total`, and fails if either is missing. Everything
# listens on loopback only, everything is bounded (60 s for the whole wait) and every
# process started here is stopped on exit, success or not. Logs stay in
# $CARGO_TARGET_DIR/prometheus-e2e/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
bin=$(scripts/fetch-prometheus.sh)
cargo build --release --features axum,prometheus --example ingest

work=$CARGO_TARGET_DIR/prometheus-e2e
rm -rf "$work"
mkdir -p "$work"
ingest_pid=
prometheus_pid=

stop() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop "$prometheus_pid"
    stop "$ingest_pid"
    if ((rc != 0)); then
        echo "--- ingest log" >&2
        tail -n 40 "$work/ingest.log" >&2 || true
        echo "--- prometheus log" >&2
        tail -n 40 "$work/prometheus.log" >&2 || true
        echo "prometheus-e2e: FAILED (logs in $work)" >&2
    fi
    rm -rf "$work/data"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "prometheus-e2e: $*" >&2
    exit 1
}

deadline=$((SECONDS + 60))
wait_or_fail() { # what
    ((SECONDS < deadline)) || fail "timed out waiting for $1"
    sleep 0.25
}

# 1. The example: a short run, then it keeps serving on its ephemeral loopback port.
"$CARGO_TARGET_DIR/release/examples/ingest" --requests 300 \
    --addr 127.0.0.1:0 --serve-seconds 60 >"$work/ingest.log" 2>&1 &
ingest_pid=$!
until target=$(grep -om1 'http://127\.0\.0\.1:[0-9]*/metrics' "$work/ingest.log"); do
    kill -0 "$ingest_pid" 2>/dev/null || fail "the ingest example exited early"
    wait_or_fail "the example's metrics address"
done
target=${target#http://}
target=${target%/metrics}
echo "prometheus-e2e: the example serves http://$target/metrics"

# 2. Prometheus on a free loopback port, scraping the example every second.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: axon_ingest
    static_configs:
      - targets: ['$target']
YAML
"$bin/promtool" check config "$work/prometheus.yml"
"$bin/prometheus" \
    --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$work/data" \
    --web.listen-address="127.0.0.1:$port" \
    --web.console.templates="$work/none" --web.console.libraries="$work/none" \
    >"$work/prometheus.log" 2>&1 &
prometheus_pid=$!
api=http://127.0.0.1:$port/api/v1/query
echo "prometheus-e2e: Prometheus on http://127.0.0.1:$port"

# query PROMQL: prints the value of the first result, fails (non-zero) when there is none.
query() {
    local body
    body=$(curl -fsS --max-time 2 --get --data-urlencode "query=$1" "$api" 2>/dev/null) || return 1
    python3 -c '
import json, sys
body = json.load(sys.stdin)
result = body["data"]["result"] if body.get("status") == "success" else []
if not result:
    sys.exit(1)
print(result[0]["value"][1])' <<<"$body"
}

# 3. Wait for the scrape, then ask for the two series.
until up=$(query 'up{job="axon_ingest"}') && [[ $up == 1 ]]; do
    kill -0 "$prometheus_pid" 2>/dev/null || fail "Prometheus exited"
    kill -0 "$ingest_pid" 2>/dev/null || fail "the ingest example exited"
    wait_or_fail "a successful scrape (up == 1)"
done
# The run's verdict is printed once its clients are done; scrapes after it see the pool
# at rest.
until grep -Eq '^(ok|FAILED):' "$work/ingest.log"; do
    kill -0 "$ingest_pid" 2>/dev/null || fail "the ingest example exited"
    wait_or_fail "the end of the example's run"
done
until live=$(query 'buffer_pool_live_bytes{job="axon_ingest"}') && [[ $live == 0 ]]; do
    wait_or_fail "buffer_pool_live_bytes == 0 in Prometheus (last: ${live:-none})"
done
echo "prometheus-e2e: buffer_pool_live_bytes = $live"
soft_query='buffer_pool_soft_limit_exceeded_total{job="axon_ingest",tenant_id="tenant-0"}'
until exceeded=$(query "$soft_query"); do
    wait_or_fail "$soft_query in Prometheus"
done
echo "prometheus-e2e: $soft_query = $exceeded"
# tenant-0 runs with an 8 MiB soft limit: its audio and video frames exceed it.
python3 -c "import sys; sys.exit(float('$exceeded') <= 0)" ||
    fail "tenant-0 should have exceeded its soft limit, Prometheus says $exceeded"
[[ $live == 0 ]] || fail "live bytes should be 0 after the run, Prometheus says $live"

# 4. The example's own verdict: Ctrl-C ends its serving, its exit code says whether every
#    tenant's live bytes went back to 0, every checksum matched and every tenant could be
#    charged again at rest.
kill -INT "$ingest_pid"
rc=0
wait "$ingest_pid" || rc=$?
ingest_pid=
((rc == 0)) || fail "the ingest example exited with $rc"
grep -q '^ok: ' "$work/ingest.log" || fail "the ingest example did not report ok"
echo "prometheus-e2e: ok"
