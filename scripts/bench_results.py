"""Read criterion's results (target/criterion/**/new/{benchmark,estimates}.json).

Shared by bench_table.py and bench_chart.py; python3 standard library only.
"""

import json
import os
import sys

# The size classes in the order the reports show them, with their capacity.
CLASSES = [("small", "4 KiB"), ("medium", "64 KiB"), ("large", "1 MiB"), ("huge", "10 MiB")]
WRITES = [("64B", "64 B write"), ("full", "full write")]
# The peer crates the targets name: "faster than every peer crate".
PEERS = ["byte-pool", "object-pool", "lifeguard", "opool"]
CYCLE_ARMS = [
    "axon",
    "axon-tenant",
    "axon-tenant-wait",
    "built-decay",
    "built-no-decay",
    "vec",
    "bytes-mut",
    "byte-pool",
    "object-pool",
    "lifeguard",
    "opool",
    "seed-mutex",
    "floor",
]


def criterion_dir(argv_dir=None):
    """The criterion output folder: an explicit path, else $CARGO_TARGET_DIR/criterion,
    else target/criterion at the repository root (this script's parent folder)."""
    if argv_dir:
        return argv_dir
    target = os.environ.get("CARGO_TARGET_DIR")
    if not target:
        target = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target")
    return os.path.join(target, "criterion")


def load(root):
    """{(group_id, function_id): {"median": ns, "lo": ns, "hi": ns}} from the latest run."""
    results = {}
    if not os.path.isdir(root):
        sys.exit(f"no criterion results under {root}: run `cargo bench` first")
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        est_path = os.path.join(dirpath, "estimates.json")
        if not os.path.exists(est_path):
            continue
        with open(est_path) as f:
            est = json.load(f)
        median = est["median"]
        key = (bench["group_id"], bench.get("function_id") or "")
        results[key] = {
            "median": median["point_estimate"],
            "lo": median["confidence_interval"]["lower_bound"],
            "hi": median["confidence_interval"]["upper_bound"],
        }
    return results


def cycle_group(cls, write):
    return f"cycle-{cls}-{write}"


def median(results, group, arm):
    entry = results.get((group, arm))
    return None if entry is None else entry["median"]


def best_peer(results, group):
    """(name, ns) of the fastest peer crate in a group, or (None, None)."""
    found = [(median(results, group, p), p) for p in PEERS if median(results, group, p) is not None]
    if not found:
        return None, None
    ns, name = min(found)
    return name, ns


def fmt_ns(ns):
    """A duration in ns, in the unit that keeps three or four significant digits."""
    if ns is None:
        return "n/a"
    if ns < 1_000:
        return f"{ns:.1f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.2f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.3f} ms"
    return f"{ns / 1_000_000_000:.3f} s"


def fmt_delta(ns):
    """A signed difference of durations, e.g. +8.2 ns or -1.31 µs."""
    if ns is None:
        return "n/a"
    return ("+" if ns >= 0 else "-") + fmt_ns(abs(ns))
