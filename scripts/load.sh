#!/usr/bin/env bash
# HTTP load: wrk against the ingest example's server, the pool against BytesMut and
# against axum's to_bytes.
#
#   scripts/load.sh [SECONDS_PER_RUN=15] [ROUNDS=5] [REST_SECONDS=30]
#   LOAD_ALLOCATOR=mimalloc scripts/load.sh ...   # every mode on mimalloc
#
# Each round runs `examples/ingest --serve` once per `--alloc` mode (LOAD_MODES, default
# all four; each round starts one mode later, so no mode always runs first):
#   pool      the pool's chain: `collect_body_chain_wait`, frozen into a BytesChain, whose
#             segments the consumers read without making it contiguous
#   pool-buf  the pool's contiguous PooledBuf: `collect_body_wait`, frozen into Bytes
#   bytesmut  a fresh BytesMut per body, sized from the size hint
#   to-bytes  `axum::body::to_bytes`, what an axum handler writes by default
# each a fresh process on an ephemeral 127.0.0.1 port with LOAD_TENANTS tenants (default 8;
# the last one hard-limited to 20 MiB), and drives it with wrk (LOAD_THREADS=2 threads,
# LOAD_CONNECTIONS=32 connections, SECONDS_PER_RUN seconds) and scripts/ingest.lua, the
# example's upload mix. LOAD_ALLOCATOR=mimalloc runs the `ingest_mimalloc` example
# instead, the same server with mimalloc as the global allocator (default glibc: the
# system's malloc). For each run it measures, from wrk and the server's /proc entries:
#   req/s, MB/s (request bodies the server accepted, over wrk's duration), p50 and p99
#   latency, server CPU per request (user + system ticks during the load), peak RSS
#   (VmHWM) and RSS at rest (VmRSS, REST_SECONDS after the load ended),
# then stops the server with SIGINT: it checks for leaks and reservations refused at rest
# and exits non-zero when one fails. One Markdown table follows: every run, the median of
# each mode, the ratios of each pool mode to bytesmut and to to-bytes, and the targets
# (the chain at most 1.0x their CPU per request and peak RSS, at most 0.5x their RSS at
# rest), reported, not enforced: the figures are of a shared machine.
#
# wrk is installed with apt-get when missing (root, Debian); a failed install fails the
# script. The script fails when a server fails its checks, wrk fails, or a run completes
# no request; the table is printed first. Only loopback is used; every process started
# here is stopped on exit. Logs stay in $CARGO_TARGET_DIR/load/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

seconds=${1:-15}
rounds=${2:-5}
rest=${3:-30}
threads=${LOAD_THREADS:-2}
connections=${LOAD_CONNECTIONS:-32}
tenants=${LOAD_TENANTS:-8}
allocator=${LOAD_ALLOCATOR:-glibc}
read -r -a modes <<<"${LOAD_MODES:-pool pool-buf bytesmut to-bytes}"
((${#modes[@]} > 0)) || {
    echo "load: LOAD_MODES is empty" >&2
    exit 2
}
for mode in "${modes[@]}"; do
    case $mode in
    pool | pool-buf | bytesmut | to-bytes) ;;
    *)
        echo "load: unknown mode $mode in LOAD_MODES (pool, pool-buf, bytesmut, to-bytes)" >&2
        exit 2
        ;;
    esac
done
case $allocator in
glibc) example=ingest ;;
mimalloc) example=ingest_mimalloc ;;
*)
    echo "load: LOAD_ALLOCATOR is glibc or mimalloc, not $allocator" >&2
    exit 2
    ;;
esac
for n in "$seconds" "$rounds" "$rest" "$threads" "$connections" "$tenants"; do
    [[ $n =~ ^[0-9]+$ ]] || {
        echo "usage: scripts/load.sh [SECONDS_PER_RUN] [ROUNDS] [REST_SECONDS] (whole numbers)" >&2
        exit 2
    }
done
((seconds > 0 && rounds > 0 && tenants >= 2)) || {
    echo "load: SECONDS_PER_RUN and ROUNDS must be positive, LOAD_TENANTS at least 2" >&2
    exit 2
}

fail() {
    echo "load: $*" >&2
    exit 1
}

if ! command -v wrk >/dev/null 2>&1; then
    echo "load: wrk is missing: installing Debian's wrk"
    as_root=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || fail "installing wrk needs root (not root, no sudo)"
        as_root=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -q || fail "apt-get update failed"
    "${as_root[@]}" apt-get install -y -q --no-install-recommends wrk || fail "apt-get install wrk failed"
    command -v wrk >/dev/null 2>&1 || fail "wrk still missing after apt-get install wrk"
fi
command -v python3 >/dev/null 2>&1 || fail "python3 is needed for the table"

cargo build --release --features axum --example "$example"
bin=$CARGO_TARGET_DIR/release/examples/$example
work=$CARGO_TARGET_DIR/load
rm -rf "$work"
mkdir -p "$work"
results=$work/results.tsv
: >"$results"
ticks_per_second=$(getconf CLK_TCK)

server_pid=
stop_server() {
    local pid=$server_pid
    server_pid=
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# cpu_ticks PID: user + system clock ticks of the process so far.
cpu_ticks() {
    # Fields after the command name (in parentheses, may hold spaces): utime is the 12th,
    # stime the 13th.
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}

# status_kib PID FIELD: a VmXXX figure of /proc/PID/status, in KiB.
status_kib() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# field NAME LINE: the value of NAME=value in a summary line.
field() {
    sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

failures=()
run_one() { # run_one ALLOC ROUND
    local alloc=$1 round=$2
    local log=$work/$alloc-$round.server.log wrk_log=$work/$alloc-$round.wrk.log
    "$bin" --serve --alloc "$alloc" --tenants "$tenants" --addr 127.0.0.1:0 >"$log" 2>&1 &
    server_pid=$!
    local addr deadline=$((SECONDS + 30))
    until addr=$(grep -om1 'http://127\.0\.0\.1:[0-9]*' "$log"); do
        kill -0 "$server_pid" 2>/dev/null || fail "the $alloc server exited early (log: $log)"
        ((SECONDS < deadline)) || fail "the $alloc server did not start within 30 s (log: $log)"
        sleep 0.1
    done

    local ticks_before ticks_after
    ticks_before=$(cpu_ticks "$server_pid")
    wrk -t"$threads" -c"$connections" -d"${seconds}s" --timeout 10s --latency \
        -s scripts/ingest.lua "$addr" -- "$tenants" >"$wrk_log" 2>&1 || fail "wrk failed (log: $wrk_log)"
    ticks_after=$(cpu_ticks "$server_pid")
    local peak_kib rest_kib
    peak_kib=$(status_kib "$server_pid" VmHWM)
    sleep "$rest"
    rest_kib=$(status_kib "$server_pid" VmRSS)

    local pid=$server_pid rc=0
    kill -INT "$pid"
    wait "$pid" || rc=$?
    server_pid=

    local w s
    w=$(grep -m1 '^wrk-summary ' "$wrk_log") || fail "no wrk-summary line in $wrk_log"
    s=$(grep -m1 '^load-summary ' "$log") || fail "no load-summary line in $log (exit $rc)"
    local requests duration_us bytes
    requests=$(field requests "$w")
    duration_us=$(field duration_us "$w")
    bytes=$(field bytes "$s")
    ((requests > 0)) || failures+=("$alloc round $round: wrk completed no request")
    if ((rc != 0)); then
        failures+=("$alloc round $round: the server exited with $rc: $(grep -m1 -E '^(LEAK|REFUSED|FAILED)' "$log")")
    fi
    local verdict=ok
    ((rc == 0)) || verdict="FAILED ($rc)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$alloc" "$round" "$requests" "$duration_us" "$bytes" \
        "$(field p50_us "$w")" "$(field p99_us "$w")" "$((ticks_after - ticks_before))" \
        "$peak_kib" "$rest_kib" "$(field refused "$w")" \
        "$(($(field failed "$w") + $(field socket_errors "$w")))" "$verdict" >>"$results"
    echo "load: $alloc round $round: $requests requests, server $verdict"
}

echo "load: $rounds round(s) of ${seconds} s per mode (${modes[*]}) on $allocator, $tenants tenants, $threads wrk threads, $connections connections, RSS at rest after ${rest} s"
for round in $(seq "$rounds"); do
    for i in "${!modes[@]}"; do
        run_one "${modes[$(((i + round - 1) % ${#modes[@]}))]}" "$round"
    done
done

python3 - "$results" "$ticks_per_second" "$seconds" "$connections" "$tenants" "$allocator" <<'PY'
import statistics
import sys

path, ticks_per_second, seconds, connections, tenants, allocator = (
    sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
runs = []
for line in open(path):
    (alloc, rnd, requests, duration_us, body_bytes, p50, p99, ticks, peak, rest,
     refused, errors, verdict) = line.rstrip("\n").split("\t")
    requests, secs = int(requests), int(duration_us) / 1e6
    runs.append({
        "run": f"{alloc} #{rnd}",
        "alloc": alloc,
        "req/s": requests / secs,
        "MB/s": int(body_bytes) / 1e6 / secs,
        "p50 ms": int(p50) / 1e3,
        "p99 ms": int(p99) / 1e3,
        "CPU ms/req": int(ticks) / ticks_per_second * 1e3 / max(requests, 1),
        "peak RSS MiB": int(peak) / 1024,
        "RSS at rest MiB": int(rest) / 1024,
        "429/503": int(refused),
        "errors": int(errors),
        "checks": verdict,
    })

figures = ["req/s", "MB/s", "p50 ms", "p99 ms", "CPU ms/req", "peak RSS MiB", "RSS at rest MiB"]
columns = figures + ["429/503", "errors", "checks"]

def fmt(v):
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"

print()
print(f"HTTP ingest under wrk on {allocator}: {connections} connections, {tenants} tenants, "
      f"{seconds} s per run, the example's mix")
print()
print("| run | " + " | ".join(columns) + " |")
print("|---" * (len(columns) + 1) + "|")
for r in runs:
    print(f"| {r['run']} | " + " | ".join(fmt(r[c]) for c in columns) + " |")
median = {}
for alloc in dict.fromkeys(r["alloc"] for r in runs):
    rows = [r for r in runs if r["alloc"] == alloc]
    median[alloc] = {c: statistics.median(r[c] for r in rows) for c in figures}
    print(f"| **median {alloc}** | " + " | ".join(fmt(median[alloc][c]) for c in figures)
          + f" | {sum(r['429/503'] for r in rows)} | {sum(r['errors'] for r in rows)} | |")
for alloc in ("pool", "pool-buf"):
    for base in ("bytesmut", "to-bytes"):
        if alloc not in median or base not in median:
            continue
        ratios = []
        for c in figures:
            b = median[base][c]
            ratios.append(f"{median[alloc][c] / b:.2f}x" if b else "-")
        print(f"| **{alloc} / {base}** | " + " | ".join(ratios) + " | | | |")

# The chain's targets: CPU per request and peak RSS at most 1.0x, RSS at rest at most 0.5x.
if "pool" in median:
    print()
    for base in ("bytesmut", "to-bytes"):
        if base not in median:
            continue
        for c, target in (("CPU ms/req", 1.0), ("peak RSS MiB", 1.0), ("RSS at rest MiB", 0.5)):
            b = median[base][c]
            if not b:
                continue
            ratio = median["pool"][c] / b
            verdict = "met" if ratio <= target else "MISSED"
            print(f"- pool (chain) / {base}, {c}: {ratio:.2f}x (target <= {target:.1f}x): {verdict}")
PY

if ((${#failures[@]} > 0)); then
    echo
    printf 'load: FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo
echo "load: ok"
