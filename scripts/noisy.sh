#!/usr/bin/env bash
# The noisy-neighbour scenario (issue 16): does a flood of large uploads from some tenants
# starve a quiet tenant of the pool's budget?
#
#   scripts/noisy.sh [ROUNDS=2] [SECONDS=10]
#
# The server is `examples/ingest --serve --handler plain` (the README's handler:
# `collect_body_wait` under a 10 s timeout, the body frozen and answered with its length),
# `--max-live-bytes 96MiB`, every tenant's hard limit 64 MiB, one quiet tenant (quiet-0)
# and eight flooding ones (flood-0..7). Modes (NOISY_MODES, default all three):
#   pool            the pool, no guarantee
#   pool-guarantee  the pool, quiet-0 guaranteed NOISY_GUARANTEE (default 4MiB)
#   bytesmut        the same server reading bodies into BytesMut: no budget (the control)
#   before          the pool, run by NOISY_BEFORE_BIN: an ingest binary built from an older
#                   commit (set it to add this mode; it must take the same flags); with
#                   NOISY_BEFORE_GUARANTEE=1 it also gets pool-guarantee's guarantee (an A/B
#                   of two builds of the guaranteed mode)
#   pool-unbounded  the pool without max_live_bytes (hard limits only), a diagnostic: what
#                   the pool costs the quiet tenant beside the flood when nobody waits for
#                   the budget (only with NOISY_MODES)
#   bytesmut-budget the bytesmut server with the budget's admission and no pool, a
#                   diagnostic: each flooding body waits for room for its length under
#                   NOISY_BYTESMUT_BUDGET (default 92MiB, the budget less the guarantee),
#                   the quiet tenant's never (only with NOISY_MODES)
# Each run is a fresh server on an ephemeral 127.0.0.1 port, driven by wrk and
# scripts/noisy.lua:
#   1. alone: the quiet tenant, 1..4 KiB bodies over 4 connections (1 wrk thread), SECONDS;
#   2. beside the flood: a second wrk (2 threads, 32 connections) uploads 3 MiB and 12 MiB
#      bodies for the flooding tenants for SECONDS + 2; one second in, the quiet tenant runs
#      again as in 1. Meanwhile curl scrapes /metrics every NOISY_SCRAPE_MS (default 150)
#      and keeps the highest `buffer_pool_live_bytes`;
#   3. the server's peak RSS (VmHWM), then SIGINT: the server checks for leaks and
#      reservations refused at rest and exits non-zero when one fails.
# Rounds interleave the modes (each round starts one mode later). One Markdown table
# follows: every run, the median of each mode, and the targets' ratios.
#
# NOISY_FLOOD_DELAY_MS (unset by default: the flood sends as fast as it is answered) makes
# each flooding connection wait that many milliseconds before each upload, a diagnostic:
# the client then sets the flood's pace, so every mode faces the same flood instead of the
# faster server drawing a heavier one onto the shared cores.
#
# NOISY_FLOOD_NICE (unset by default) runs the flood's wrk at that nice level (1..19), a
# diagnostic: on 2 cores the flood's client, sending as fast as it is answered, takes CPU
# from the quiet tenant's client, and more of it from a server that answers the flood
# faster; niced, it yields the cores to the quiet client and to the server first.
#
# NOISY_MAX_IDLE_BYTES (bytes, or with a suffix KiB, MiB or GiB; unset: the crate's default,
# 256 MiB) sets the pool's `max_idle_bytes` (`--max-idle-bytes`) in every mode but before;
# issue 17's scenario sets it to a quarter of the budget, 24MiB. The summary then reports
# each pool mode's highest peak RSS against max_live_bytes + max_idle_bytes + 32 MiB.
#
# wrk and curl are installed with apt-get when missing (root or sudo, Debian); a failed
# install fails the script. The script fails when a server fails its checks, a wrk fails
# or completes no request, or a scrape shows live bytes above the budget; the table is
# printed first. Only loopback is used; every process started here is stopped on exit.
# Logs stay in $CARGO_TARGET_DIR/noisy/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

rounds=${1:-2}
seconds=${2:-10}
scrape_ms=${NOISY_SCRAPE_MS:-150}
for n in "$rounds" "$seconds" "$scrape_ms"; do
    [[ $n =~ ^[0-9]+$ ]] || {
        echo "usage: scripts/noisy.sh [ROUNDS] [SECONDS] (whole numbers)" >&2
        exit 2
    }
done
((rounds > 0 && seconds > 0 && scrape_ms > 0)) || {
    echo "noisy: ROUNDS, SECONDS and NOISY_SCRAPE_MS must be positive" >&2
    exit 2
}
scrape_s=$(awk -v ms="$scrape_ms" 'BEGIN { printf "%.3f", ms / 1000 }')
budget_bytes=$((96 << 20))
budget_flag=96MiB
hard_limit_flag=64MiB
guarantee=${NOISY_GUARANTEE:-4MiB}
before_bin=${NOISY_BEFORE_BIN:-}
max_idle=${NOISY_MAX_IDLE_BYTES:-}
flood_delay=${NOISY_FLOOD_DELAY_MS:-}
flood_nice=${NOISY_FLOOD_NICE:-0}
if ! [[ $flood_nice =~ ^([0-9]|1[0-9])$ ]]; then
    echo "noisy: NOISY_FLOOD_NICE is a nice level from 0 to 19, not $flood_nice" >&2
    exit 2
fi
if [[ -n $flood_delay && ! $flood_delay =~ ^[0-9]+$ ]]; then
    echo "noisy: NOISY_FLOOD_DELAY_MS is a whole number of milliseconds, not $flood_delay" >&2
    exit 2
fi
max_idle_bytes=$((256 << 20))
if [[ -n $max_idle ]]; then
    [[ $max_idle =~ ^([0-9]+)(B|KiB|MiB|GiB)?$ ]] || {
        echo "noisy: NOISY_MAX_IDLE_BYTES is bytes or a whole number with KiB, MiB or GiB, not $max_idle" >&2
        exit 2
    }
    case ${BASH_REMATCH[2]} in
    KiB) max_idle_bytes=$((BASH_REMATCH[1] << 10)) ;;
    MiB) max_idle_bytes=$((BASH_REMATCH[1] << 20)) ;;
    GiB) max_idle_bytes=$((BASH_REMATCH[1] << 30)) ;;
    *) max_idle_bytes=${BASH_REMATCH[1]} ;;
    esac
fi
read -r -a modes <<<"${NOISY_MODES:-pool pool-guarantee bytesmut${before_bin:+ before}}"
for mode in "${modes[@]}"; do
    case $mode in
    pool | pool-guarantee | pool-unbounded | bytesmut | bytesmut-budget) ;;
    before) [[ -x $before_bin ]] || {
        echo "noisy: mode before needs NOISY_BEFORE_BIN, an executable ingest binary" >&2
        exit 2
    } ;;
    *)
        echo "noisy: unknown mode $mode (pool, pool-guarantee, pool-unbounded, bytesmut, bytesmut-budget, before)" >&2
        exit 2
        ;;
    esac
done

fail() {
    echo "noisy: $*" >&2
    exit 1
}

missing=()
for tool in wrk curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
    echo "noisy: ${missing[*]} missing: installing Debian's"
    as_root=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || fail "installing ${missing[*]} needs root (not root, no sudo)"
        as_root=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -q || fail "apt-get update failed"
    "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        fail "apt-get install ${missing[*]} failed"
    for tool in "${missing[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || fail "$tool still missing after apt-get install"
    done
fi
command -v python3 >/dev/null 2>&1 || fail "python3 is needed for the table"

cargo build --release --features axum --example ingest
bin=$CARGO_TARGET_DIR/release/examples/ingest
work=$CARGO_TARGET_DIR/noisy
rm -rf "$work"
mkdir -p "$work"
results=$work/results.tsv
: >"$results"

# Every process started here, stopped on exit (TERM, then KILL after 10 s).
pids=()
stop_all() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# field NAME LINE: the value of NAME=value in a summary line.
field() {
    sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

# wrk_line LOG: its wrk-summary line, or fail.
wrk_line() {
    grep -m1 '^wrk-summary ' "$1" || fail "no wrk-summary line in $1"
}

quiet_wrk() { # quiet_wrk ADDR LOG
    wrk -t1 -c4 -d"${seconds}s" --timeout 15s -s scripts/noisy.lua "$1" -- quiet 1 >"$2" 2>&1
}

failures=()
run_one() { # run_one MODE ROUND
    local mode=$1 round=$2 exe=$bin
    local flags=(--serve --handler plain --addr 127.0.0.1:0 --quiet 1 --flood 8
        --tenant-hard-limit "$hard_limit_flag")
    [[ $mode == pool-unbounded ]] || flags+=(--max-live-bytes "$budget_flag")
    [[ -z $max_idle || $mode == before ]] || flags+=(--max-idle-bytes "$max_idle")
    case $mode in
    pool-unbounded) flags+=(--alloc pool) ;;
    pool) flags+=(--alloc pool) ;;
    pool-guarantee) flags+=(--alloc pool --guarantee-bytes "$guarantee") ;;
    bytesmut) flags+=(--alloc bytesmut) ;;
    bytesmut-budget) flags+=(--alloc bytesmut --bytesmut-budget "${NOISY_BYTESMUT_BUDGET:-92MiB}") ;;
    before)
        exe=$before_bin
        flags+=(--alloc pool ${NOISY_BEFORE_GUARANTEE:+--guarantee-bytes "$guarantee"})
        ;;
    esac
    local log=$work/$mode-$round.server.log
    "$exe" "${flags[@]}" >"$log" 2>&1 &
    local server=$!
    pids+=("$server")
    local addr deadline=$((SECONDS + 30))
    until addr=$(grep -om1 'http://127\.0\.0\.1:[0-9]*' "$log"); do
        kill -0 "$server" 2>/dev/null || fail "the $mode server exited early (log: $log)"
        ((SECONDS < deadline)) || fail "the $mode server did not start within 30 s (log: $log)"
        sleep 0.1
    done

    # 1. The quiet tenant alone.
    local alone=$work/$mode-$round.alone.log
    quiet_wrk "$addr" "$alone" || fail "wrk (quiet, alone) failed (log: $alone)"

    # 2. Beside the flood, with /metrics scraped throughout.
    local flood_log=$work/$mode-$round.flood.log beside=$work/$mode-$round.beside.log
    local scrapes=$work/$mode-$round.scrapes
    : >"$scrapes"
    NOISY_LUA_FLOOD_DELAY_MS=$flood_delay \
        nice -n "$flood_nice" \
        wrk -t2 -c32 -d"$((seconds + 2))s" --timeout 15s -s scripts/noisy.lua "$addr" -- flood 8 \
        >"$flood_log" 2>&1 &
    local flood=$!
    pids+=("$flood")
    (
        # Bounded: the flood's length at one scrape per period, and 30 s more.
        for _ in $(seq $(((seconds + 32) * 1000 / scrape_ms))); do
            kill -0 "$flood" 2>/dev/null || break
            curl -fsS --max-time 2 "$addr/metrics" |
                awk '$1 == "buffer_pool_live_bytes" { print $2 }' >>"$scrapes" || true
            sleep "$scrape_s"
        done
    ) &
    local scraper=$!
    pids+=("$scraper")
    sleep 1
    quiet_wrk "$addr" "$beside" || fail "wrk (quiet, beside the flood) failed (log: $beside)"
    wait "$flood" || fail "wrk (flood) failed (log: $flood_log)"
    wait "$scraper" || true

    # 3. Peak RSS, then the server's checks at rest.
    local peak_kib
    peak_kib=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$server/status")
    local rc=0
    kill -INT "$server"
    wait "$server" || rc=$?
    pids=()

    local a b f
    a=$(wrk_line "$alone")
    b=$(wrk_line "$beside")
    f=$(wrk_line "$flood_log")
    local n_scrapes max_live
    n_scrapes=$(grep -c . "$scrapes" || true)
    max_live=$(sort -n "$scrapes" | tail -n1)
    ((n_scrapes > 0)) || failures+=("$mode round $round: no /metrics scrape succeeded")
    if [[ $mode != bytesmut* && $mode != pool-unbounded && -n $max_live ]] && ((max_live > budget_bytes)); then
        failures+=("$mode round $round: a scrape showed buffer_pool_live_bytes $max_live, above max_live_bytes $budget_bytes")
    fi
    local line
    for line in "$a" "$b" "$f"; do
        (($(field requests "$line") > 0)) || failures+=("$mode round $round: a wrk completed no request")
    done
    if ((rc != 0)); then
        failures+=("$mode round $round: the server exited with $rc: $(grep -m1 -E '^(LEAK|REFUSED|FAILED)' "$log" || true)")
    fi
    local verdict=ok
    ((rc == 0)) || verdict="FAILED ($rc)"
    printf '%s\t' "$mode" "$round" \
        "$(field requests "$a")" "$(field duration_us "$a")" "$(field p99_us "$a")" \
        "$(field requests "$b")" "$(field duration_us "$b")" "$(field p99_us "$b")" \
        "$(field max_us "$b")" "$(field refused "$b")" \
        "$(field requests "$f")" "$(field duration_us "$f")" "$(field p99_us "$f")" \
        "$(field refused "$f")" \
        "$(($(field failed "$a") + $(field failed "$b") + $(field failed "$f") +
            $(field socket_errors "$a") + $(field socket_errors "$b") + $(field socket_errors "$f")))" \
        "$peak_kib" "${max_live:-0}" "$n_scrapes" >>"$results"
    printf '%s\n' "$verdict" >>"$results"
    echo "noisy: $mode round $round: quiet $(field requests "$a") alone, $(field requests "$b") beside $(field requests "$f") flood requests, server $verdict"
}

echo "noisy: $rounds round(s) of ${seconds} s per phase; modes: ${modes[*]}; budget $budget_flag, hard limits $hard_limit_flag${flood_delay:+; each flooding connection waits $flood_delay ms before each upload}$( ((flood_nice > 0)) && echo "; the flood's wrk at nice $flood_nice")"
for round in $(seq "$rounds"); do
    for i in "${!modes[@]}"; do
        run_one "${modes[$(((i + round - 1) % ${#modes[@]}))]}" "$round"
    done
done

python3 - "$results" "$budget_bytes" "$seconds" "$max_idle_bytes" <<'PY'
import statistics
import sys

path, budget, seconds, max_idle = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
runs = []
for line in open(path):
    (mode, rnd, a_req, a_us, a_p99, b_req, b_us, b_p99, b_max, b_refused,
     f_req, f_us, f_p99, f_refused, errors, peak, max_live, scrapes, verdict) = line.rstrip("\n").split("\t")
    runs.append({
        "run": f"{mode} #{rnd}",
        "mode": mode,
        "alone req/s": int(a_req) / (int(a_us) / 1e6),
        "alone p99 ms": int(a_p99) / 1e3,
        "beside req/s": int(b_req) / (int(b_us) / 1e6),
        "beside p99 ms": int(b_p99) / 1e3,
        "beside max ms": int(b_max) / 1e3,
        "flood req/s": int(f_req) / (int(f_us) / 1e6),
        "flood p99 ms": int(f_p99) / 1e3,
        "peak RSS MiB": int(peak) / 1024,
        "max live MiB": int(max_live) / 2**20 if not mode.startswith("bytesmut") else "-",
        "scrapes": int(scrapes),
        "503 quiet/flood": f"{b_refused}/{f_refused}",
        "errors": int(errors),
        "checks": verdict,
    })

figures = ["alone req/s", "alone p99 ms", "beside req/s", "beside p99 ms", "beside max ms",
           "flood req/s", "flood p99 ms", "peak RSS MiB", "max live MiB"]
columns = figures + ["scrapes", "503 quiet/flood", "errors", "checks"]

def fmt(v):
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"

print()
print(f"Noisy neighbours: quiet-0 (1..4 KiB, 4 connections) alone, then beside 8 flooding tenants "
      f"(3 and 12 MiB, 32 connections); {seconds} s a phase; max_live_bytes {budget >> 20} MiB, "
      "hard limits 64 MiB; max live: the highest buffer_pool_live_bytes scraped during the flood")
print()
print("| run | " + " | ".join(columns) + " |")
print("|---" * (len(columns) + 1) + "|")
for r in runs:
    print(f"| {r['run']} | " + " | ".join(fmt(r[c]) for c in columns) + " |")
median = {}
for mode in dict.fromkeys(r["mode"] for r in runs):
    rows = [r for r in runs if r["mode"] == mode]
    median[mode] = {}
    for c in figures:
        values = [r[c] for r in rows if not isinstance(r[c], str)]
        # the highest scrape is a bound, not a rate: report the maximum over rounds
        median[mode][c] = (max(values) if c == "max live MiB" else statistics.median(values)) if values else "-"
    print(f"| **median {mode}** ({len(rows)}) | " + " | ".join(fmt(median[mode][c]) for c in figures)
          + " | | | | |")

print()
base = median.get("bytesmut")
for mode in ("pool", "pool-guarantee", "pool-unbounded", "bytesmut-budget"):
    if mode in median and base:
        m = median[mode]
        print(f"- {mode}: quiet beside the flood {m['beside req/s'] / base['beside req/s']:.2f}x the "
              f"req/s (target >= 0.9x) and {m['beside p99 ms'] / base['beside p99 ms']:.2f}x the p99 "
              f"(target <= 1.5x) of bytesmut beside the same flood")
if "before" in median:
    for mode in ("pool", "pool-guarantee"):
        if mode in median:
            print(f"- {mode}: the flood's req/s {median[mode]['flood req/s'] / median['before']['flood req/s']:.2f}x "
                  "what it got before (target >= 0.9x)")
highest = max((r["max live MiB"] for r in runs if r["mode"] not in ("bytesmut", "bytesmut-budget", "pool-unbounded")),
              default=None)
if highest is not None:
    print(f"- highest buffer_pool_live_bytes at any scrape: {highest:.1f} MiB "
          f"(max_live_bytes {budget >> 20} MiB)")
# Peak RSS against what the pool may hold: its budget, its idle cap, and 32 MiB for the rest
# of the process (runtime, sockets, hyper's buffers).
bound = (budget + max_idle) / 2**20 + 32
for mode in ("pool", "pool-guarantee"):
    peaks = [r["peak RSS MiB"] for r in runs if r["mode"] == mode]
    if peaks:
        verdict = "within" if max(peaks) <= bound else "ABOVE"
        print(f"- {mode}: highest peak RSS {max(peaks):.1f} MiB, {verdict} max_live_bytes "
              f"{budget >> 20} MiB + max_idle_bytes {max_idle / 2**20:.0f} MiB + 32 MiB = {bound:.0f} MiB")
PY

if ((${#failures[@]} > 0)); then
    echo
    printf 'noisy: FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo
echo "noisy: ok"
