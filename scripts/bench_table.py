#!/usr/bin/env python3
"""Turn the latest `cargo bench` results into markdown: the issue's targets with the
figures reached, the cycle medians of every arm, and the freeze, threads and growth
groups.

Every figure is criterion's median point estimate (new/estimates.json); a ratio is the
ratio of two medians of the same run.

Usage:
    python3 scripts/bench_table.py [--criterion-dir DIR] [--update FILE]

Without --update the markdown goes to stdout. With it, the text between the lines
`<!-- bench-table:start -->` and `<!-- bench-table:end -->` of FILE is replaced.
"""

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_results import (  # noqa: E402
    CLASSES,
    CYCLE_ARMS,
    WRITES,
    best_peer,
    criterion_dir,
    cycle_group,
    fmt_delta,
    fmt_ns,
    load,
    median,
)

START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}"


def verdict(value, limit, less_than=False):
    if value is None:
        return "not measured"
    ok = value < limit if less_than else value <= limit
    return "**pass**" if ok else "**FAIL**"


def targets(res):
    """Rows (target, figure, measured, limit, verdict) for issue 9's targets, and the
    figures issues 10 and 11 ask to show (waiting and decay cost nothing when unused)."""
    rows = []
    g = cycle_group("small", "64B")
    axon = median(res, g, "axon")
    tenant = median(res, g, "axon-tenant")

    r = ratio(tenant, axon)
    rows.append(("Small 64 B cycle with a tenant", "axon-tenant / axon", fmt_ratio(r), "≤ 1.2", verdict(r, 1.2)))
    r = ratio(axon, median(res, g, "lifeguard"))
    rows.append(("Small 64 B cycle, no tenant", "axon / lifeguard", fmt_ratio(r), "≤ 1", verdict(r, 1.0)))
    r = ratio(axon, median(res, g, "vec"))
    rows.append(("Small 64 B cycle, no tenant", "axon / vec", fmt_ratio(r), "≤ 0.40", verdict(r, 0.40)))

    for cls, size in CLASSES:
        g = cycle_group(cls, "64B")
        a = median(res, g, "axon")
        for peer in ("opool", "object-pool"):
            r = ratio(a, median(res, g, peer))
            rows.append((f"{size} 64 B cycle", f"axon / {peer}", fmt_ratio(r), "< 1", verdict(r, 1.0, less_than=True)))

    r = ratio(median(res, "threads-return", "cross-thread"), median(res, "threads-return", "same-thread"))
    rows.append(("slab returned by another thread", "cross-thread / same-thread", fmt_ratio(r), "≤ 1.5", verdict(r, 1.5)))
    r = ratio(median(res, "threads-two-cycling", "axon"), median(res, "threads-two-cycling", "vec"))
    rows.append(("two threads cycling Small", "axon / vec per op", fmt_ratio(r), "≤ 0.35", verdict(r, 0.35)))

    for group, size in [("freeze-small", "4 KiB"), ("freeze-huge", "10 MiB")]:
        m = median(res, group, "axon")
        rows.append((f"freeze + clone + drop, {size}", "axon", fmt_ns(m), "≤ 50 ns", verdict(m, 50.0)))

    for cls, size in CLASSES:
        g = cycle_group(cls, "full")
        r = ratio(median(res, g, "axon"), median(res, g, "floor"))
        rows.append((f"{size} full-buffer cycle", "axon / floor", fmt_ratio(r), "≤ 1.10", verdict(r, 1.10)))

    for cls, size in CLASSES:
        g = cycle_group(cls, "64B")
        r = ratio(median(res, g, "axon-tenant-wait"), median(res, g, "axon-tenant"))
        rows.append((f"{size} 64 B, nobody waiting (issue 10)", "axon-tenant-wait / axon-tenant", fmt_ratio(r), "≈ 1", "shown"))
        r = ratio(median(res, g, "built-decay"), median(res, g, "built-no-decay"))
        rows.append((f"{size} 64 B, idle decay on (issue 11)", "built-decay / built-no-decay", fmt_ratio(r), "≈ 1", "shown"))
    return rows


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def cycle_medians(res):
    groups = [(cls, size, write, label) for cls, size in CLASSES for write, label in WRITES]
    header = ["arm"] + [f"{size} {'64 B' if w == '64B' else 'full'}" for _, size, w, _ in groups]
    rows = []
    for arm in CYCLE_ARMS:
        rows.append([f"`{arm}`"] + [fmt_ns(median(res, cycle_group(c, w), arm)) for c, _, w, _ in groups])
    return table(header, rows)


def cycle_ratios(res):
    header = [
        "class",
        "write",
        "axon",
        "axon / vec",
        "axon / bytes-mut",
        "axon / floor",
        "best peer",
        "axon / best peer",
        "axon / seed-mutex",
        "tenant − no tenant",
    ]
    rows = []
    for cls, size in CLASSES:
        for write, label in WRITES:
            g = cycle_group(cls, write)
            a = median(res, g, "axon")
            t = median(res, g, "axon-tenant")
            peer, peer_ns = best_peer(res, g)
            rows.append(
                [
                    size,
                    label,
                    fmt_ns(a),
                    fmt_ratio(ratio(a, median(res, g, "vec"))),
                    fmt_ratio(ratio(a, median(res, g, "bytes-mut"))),
                    fmt_ratio(ratio(a, median(res, g, "floor"))),
                    f"`{peer}` {fmt_ns(peer_ns)}" if peer else "n/a",
                    fmt_ratio(ratio(a, peer_ns)),
                    fmt_ratio(ratio(a, median(res, g, "seed-mutex"))),
                    fmt_delta(None if a is None or t is None else t - a),
                ]
            )
    return table(header, rows)


def other_groups(res):
    rows = []
    for group, arms in [
        ("freeze-small", ["axon", "from-owner-floor", "bytes-copy"]),
        ("freeze-large", ["axon", "from-owner-floor", "bytes-copy"]),
        ("freeze-huge", ["axon", "from-owner-floor", "bytes-copy"]),
        ("threads-two-cycling", ["axon", "vec", "seed-mutex"]),
        ("threads-return", ["cross-thread", "same-thread"]),
        ("growth-3MiB", ["axon", "vec", "bytes-mut"]),
        ("registry-hostile-ids", ["one-slot-free", "map-full"]),
        ("registry-lookup", ["pool-tenant", "tenant-clone"]),
    ]:
        base = median(res, group, arms[0])
        for arm in arms:
            m = median(res, group, arm)
            rows.append([f"`{group}`", f"`{arm}`", fmt_ns(m), fmt_ratio(ratio(m, base))])
    return table(["group", "arm", "median", "÷ first arm"], rows)


def render(res):
    parts = [
        "#### Targets (issue 9), and the unused cost of waiting (issue 10) and decay (issue 11)",
        "",
        table(["target", "figure", "measured", "limit", "verdict"], targets(res)),
        "",
        "#### Cycle: median time per acquire + write + drop",
        "",
        cycle_medians(res),
        "",
        "#### Cycle: axon-buffer against each alternative (ratios of medians)",
        "",
        cycle_ratios(res),
        "",
        "#### Freeze, two threads, growth, registry",
        "",
        "Freeze: time per buffer of freeze (or copy) + one clone + dropping both. "
        "Two threads: wall time per cycle on each thread. Return: wall time per buffer sent. "
        "Registry: time per hostile id (20 000 ids, `max_tenants` 10 000), and per handle.",
        "",
        other_groups(res),
    ]
    return "\n".join(parts) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--criterion-dir", help="criterion output (default: $CARGO_TARGET_DIR/criterion or target/criterion)")
    parser.add_argument("--update", metavar="FILE", help="replace the marked section of FILE instead of printing")
    args = parser.parse_args()

    text = render(load(criterion_dir(args.criterion_dir)))
    if not args.update:
        sys.stdout.write(text)
        return
    with open(args.update, encoding="utf-8") as f:
        doc = f.read()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        sys.exit(f"{args.update} has no {START} ... {END} section")
    doc = pattern.sub(lambda _m: f"{START}\n{text}{END}", doc)
    with open(args.update, "w", encoding="utf-8") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
