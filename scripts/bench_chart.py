#!/usr/bin/env python3
"""Draw docs/bench-cycle.svg from the latest `cargo bench` results: the median time of
one cycle (acquire, write, drop) per size class, for axon-buffer, plain `Vec` and the
fastest peer crate of that group, with a 64-byte write and with a full-buffer write.

The y axis is logarithmic: a cycle costs nanoseconds at 4 KiB and milliseconds when
10 MiB are written. python3 standard library only.

Usage:
    python3 scripts/bench_chart.py [--criterion-dir DIR] [--out FILE]
"""

import argparse
import math
import os
import sys
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_results import (  # noqa: E402
    CLASSES,
    WRITES,
    best_peer,
    criterion_dir,
    cycle_group,
    fmt_ns,
    load,
    median,
)

SERIES = [
    ("axon-buffer", "#1f6feb"),
    ("Vec::with_capacity", "#8c959f"),
    ("best peer crate", "#e36209"),
]
PANEL_W, PANEL_H = 520, 360
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 85, 20, 70, 80
BAR_W, BAR_GAP = 30, 4


def tick_label(ns):
    """A round duration as a tick label: 20 ns, 500 ns, 1 µs, 2 ms, ..."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:g} {unit}"
    return f"{ns:g} ns"


def bars(res, write):
    """Per class: [(value_ns, label under the bar)] for the three series."""
    out = []
    for cls, _size in CLASSES:
        g = cycle_group(cls, write)
        peer, peer_ns = best_peer(res, g)
        out.append(
            [
                (median(res, g, "axon"), ""),
                (median(res, g, "vec"), ""),
                (peer_ns, peer or ""),
            ]
        )
    return out


def panel(x0, title, data):
    """One panel's SVG elements; the plot box starts at x0."""
    values = [ns for group in data for ns, _ in group if ns]
    if not values:
        sys.exit("no cycle results: run `cargo bench --bench cycle` first")
    # A bar's height is its distance from the bottom of the axis: leave the shortest one
    # some of it, and the tallest room for its label.
    lo_exp = math.log10(min(values)) - 0.3
    label_px = 70
    hi_exp = lo_exp + (math.log10(max(values)) - lo_exp) / (1 - label_px / PANEL_H)
    steps = (1, 2, 5) if hi_exp - lo_exp < 2.5 else (1,)
    el = []
    top, bottom = MARGIN_T, MARGIN_T + PANEL_H
    left, right = x0 + MARGIN_L, x0 + MARGIN_L + PANEL_W

    def y_of(ns):
        frac = (math.log10(ns) - lo_exp) / (hi_exp - lo_exp)
        return bottom - frac * PANEL_H

    el.append(f'<text x="{(left + right) / 2}" y="{top - 40}" class="title">{escape(title)}</text>')
    for e in range(math.floor(lo_exp), math.ceil(hi_exp) + 1):
        for m in steps:
            ns = m * 10**e
            if not lo_exp <= math.log10(ns) <= hi_exp:
                continue
            y = y_of(ns)
            el.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" class="grid"/>')
            el.append(f'<text x="{left - 8}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick_label(ns)}</text>')
    el.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" class="axis"/>')
    el.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>')

    slot = PANEL_W / len(CLASSES)
    group_w = len(SERIES) * BAR_W + (len(SERIES) - 1) * BAR_GAP
    for i, ((_cls, size), values) in enumerate(zip(CLASSES, data)):
        gx = left + i * slot + (slot - group_w) / 2
        for j, ((ns, label), (_name, color)) in enumerate(zip(values, SERIES)):
            bx = gx + j * (BAR_W + BAR_GAP)
            if ns is None or ns <= 0:
                el.append(f'<text x="{bx + BAR_W / 2}" y="{bottom - 6}" class="val">n/a</text>')
                continue
            y = y_of(ns)
            el.append(
                f'<rect x="{bx:.1f}" y="{y:.1f}" width="{BAR_W}" height="{bottom - y:.1f}" fill="{color}">'
                f"<title>{escape(fmt_ns(ns))}</title></rect>"
            )
            el.append(
                f'<text x="{bx + BAR_W / 2:.1f}" y="{y - 4:.1f}" class="val" '
                f'transform="rotate(-90 {bx + BAR_W / 2:.1f} {y - 4:.1f})" text-anchor="start">'
                f"{escape(fmt_ns(ns))}</text>"
            )
            if label:
                el.append(
                    f'<text x="{bx + BAR_W / 2:.1f}" y="{bottom + 30}" class="peer">{escape(label)}</text>'
                )
        el.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{bottom + 16}" class="cls">{escape(size)}</text>')
    el.append(
        f'<text x="{x0 + 14}" y="{(top + bottom) / 2}" class="tick" '
        f'transform="rotate(-90 {x0 + 14} {(top + bottom) / 2})" text-anchor="middle">time per cycle (log scale)</text>'
    )
    return el


def render(res):
    full_w = 2 * (MARGIN_L + PANEL_W + MARGIN_R)
    full_h = MARGIN_T + PANEL_H + MARGIN_B + 30
    el = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{full_w}" height="{full_h}" '
        f'viewBox="0 0 {full_w} {full_h}" font-family="sans-serif">',
        "<style>"
        ".title{font-size:15px;font-weight:bold;text-anchor:middle}"
        ".tick{font-size:11px;fill:#444}.cls{font-size:12px;text-anchor:middle}"
        ".val{font-size:10px;fill:#222}.peer{font-size:9px;fill:#e36209;text-anchor:middle}"
        ".grid{stroke:#ddd;stroke-width:1}.axis{stroke:#333;stroke-width:1}"
        "</style>",
        f'<rect width="{full_w}" height="{full_h}" fill="white"/>',
    ]
    for k, (write, label) in enumerate(WRITES):
        title = f"acquire, {label.replace('full write', 'fill the whole buffer')}, drop"
        el += panel(k * (MARGIN_L + PANEL_W + MARGIN_R), title, bars(res, write))
    lx = MARGIN_L
    ly = full_h - 16
    for name, color in SERIES:
        el.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{color}"/>')
        el.append(f'<text x="{lx + 18}" y="{ly}" class="tick">{escape(name)}</text>')
        lx += 170
    el.append(
        f'<text x="{full_w - MARGIN_R}" y="{ly}" class="tick" text-anchor="end">'
        "criterion medians; cargo bench --bench cycle</text>"
    )
    el.append("</svg>")
    return "\n".join(el) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--criterion-dir", help="criterion output (default: $CARGO_TARGET_DIR/criterion or target/criterion)")
    default_out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "bench-cycle.svg")
    parser.add_argument("--out", default=default_out, help="SVG to write (default: docs/bench-cycle.svg)")
    args = parser.parse_args()
    svg = render(load(criterion_dir(args.criterion_dir)))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(svg)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
