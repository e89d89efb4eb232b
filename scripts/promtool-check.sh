#!/usr/bin/env bash
# Checks axon-buffer's OpenMetrics text with `promtool check metrics` from Debian's
# `prometheus` package (2.42, fetched and unpacked by fetch-prometheus.sh, no daemon).
#
# Two expositions are checked:
#   1. the hostile-tenant-id exposition of tests/prometheus.rs (ids with `\`, `"`,
#      newlines, CR, unicode, spaces, the empty id, `# EOF`, overflow ids), and
#   2. the exposition `examples/ingest` serves on GET /metrics after a short run (it prints
#      it at the end).
# A deliberately broken exposition (a raw newline inside a label value) must be rejected,
# so a promtool that parses nothing cannot pass this script.
#
# Exit codes of promtool 2.42: 0 clean, 1 parse error, 3 lint findings.
# Any parse error fails this script. Lint findings that remain, and why:
#   `<family>_total no help text`, once per counter family. promtool 2.42 lints with the
#   Prometheus text-format parser, which does not know OpenMetrics counters: it reads
#   `# HELP buffer_pool_hits` / `# TYPE buffer_pool_hits counter` as a family with no
#   samples and the sample `buffer_pool_hits_total` as a second, untyped family without
#   HELP. The OpenMetrics text is right (the family name carries no `_total`, the sample
#   does: the OpenMetrics spec and prometheus-client both require it), and Prometheus
#   itself scrapes it with its OpenMetrics parser (see prometheus-e2e.sh).
# Those findings are accepted only for families declared `counter` in the same text; any
# other finding fails the script.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
bin=$(scripts/fetch-prometheus.sh)
promtool=$bin/promtool
out=$CARGO_TARGET_DIR/promtool-check
rm -rf "$out"
mkdir -p "$out"

echo "promtool-check: rendering the hostile-tenant exposition"
AXON_PROM_DUMP=$out/hostile.txt cargo test --features prometheus --test prometheus \
    hostile_tenant_ids_read_back_exactly_and_series_are_unique -- --exact
[[ -s $out/hostile.txt ]] || { echo "promtool-check: the test wrote no exposition" >&2; exit 1; }

echo "promtool-check: rendering the ingest example's exposition"
cargo build --release --features axum,prometheus --example ingest
"$CARGO_TARGET_DIR/release/examples/ingest" --requests 200 --tenants 3 >"$out/ingest.log" 2>&1 || {
    cat "$out/ingest.log" >&2
    echo "promtool-check: the ingest example failed" >&2
    exit 1
}
sed -n '/^# Prometheus text/,/^# EOF$/p' "$out/ingest.log" | tail -n +2 >"$out/ingest.txt"
tail -n 1 "$out/ingest.txt" | grep -qx '# EOF' || {
    echo "promtool-check: no exposition ending in # EOF in the example's output" >&2
    exit 1
}

# check FILE: runs promtool on FILE, fails on a parse error or an unexplained finding.
check() {
    local file=$1 rc=0 findings
    findings=$("$promtool" check metrics <"$file" 2>&1) || rc=$?
    case $rc in
        0) echo "promtool-check: $(basename "$file"): clean" ;;
        3)
            local counters line family bad=0
            counters=$(sed -n 's/^# TYPE \([a-zA-Z_:][a-zA-Z0-9_:]*\) counter$/\1/p' "$file")
            while IFS= read -r line; do
                family=${line% no help text}
                family=${family%_total}
                if [[ $line == *"_total no help text" ]] && grep -qxF "$family" <<<"$counters"; then
                    echo "  accepted (OpenMetrics counter read as untyped): $line"
                else
                    echo "  UNEXPECTED: $line"
                    bad=1
                fi
            done <<<"$findings"
            if ((bad)); then
                echo "promtool-check: $(basename "$file"): unexpected lint findings" >&2
                return 1
            fi
            echo "promtool-check: $(basename "$file"): parsed; only the counter findings above"
            ;;
        *)
            echo "$findings" >&2
            echo "promtool-check: $(basename "$file"): promtool failed (exit $rc)" >&2
            return 1
            ;;
    esac
}

check "$out/hostile.txt"
check "$out/ingest.txt"

# The checker must be able to fail: a raw newline in a label value is a parse error.
printf '# TYPE broken gauge\nbroken{tenant_id="new\nline"} 1\n# EOF\n' >"$out/broken.txt"
rc=0
"$promtool" check metrics <"$out/broken.txt" >"$out/broken.out" 2>&1 || rc=$?
if [[ $rc != 1 ]]; then
    cat "$out/broken.out" >&2
    echo "promtool-check: promtool accepted a broken exposition (exit $rc)" >&2
    exit 1
fi
echo "promtool-check: ok (promtool rejects a broken exposition, exit 1, as it should)"
