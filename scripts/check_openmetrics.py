#!/usr/bin/env python3
"""Reads an axon-buffer exposition back with the strict OpenMetrics parser of the
Python `prometheus_client` package and compares it with the snapshot it was made from.

Usage: check_openmetrics.py METRICS.txt SNAPSHOT.json

METRICS.txt is the text `axon_buffer::prometheus::render` returned; SNAPSHOT.json is the
`BufferPoolSnapshot` taken for it (written by tests/prometheus.rs): class maps keyed by
class slug, tenant maps keyed by tenant id. The metric table below restates the contract
of DESIGN.md on its own, so a wrong name, type, label, value or escape in the Rust code
shows up here as a difference.

Exits 0 when the parser accepts the text and every family, sample, value and tenant id
matches; prints every difference and exits 1 otherwise.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

POOLED = ["small", "medium", "large", "huge"]
ALL_CLASSES = POOLED + ["oversize"]
CAPACITY = {
    "small": 4 * 1024,
    "medium": 64 * 1024,
    "large": 1024 * 1024,
    "huge": 10 * 1024 * 1024,
}

# family name -> (type, unit, label name or None, snapshot field, classes always present)
CONTRACT = {
    "buffer_pool_hits": ("counter", "", "class", "pool_hits", POOLED),
    "buffer_pool_misses": ("counter", "", "class", "pool_misses", POOLED),
    "buffer_pool_oversize_allocations": ("counter", "", None, "oversize_allocations_total", None),
    "buffer_pool_live_bytes": ("gauge", "bytes", None, "live_bytes", None),
    "buffer_pool_reserved_bytes": ("gauge", "bytes", None, "reserved_bytes", None),
    "buffer_pool_outstanding_buffers": ("gauge", "", "class", "outstanding_buffers", ALL_CLASSES),
    "buffer_pool_idle_slabs": ("gauge", "", "class", "idle_slabs", POOLED),
    "buffer_pool_idle_bytes": ("gauge", "bytes", "class", "idle_slabs", POOLED),
    "buffer_pool_discarded": ("counter", "", "class", "discarded_total", POOLED),
    "buffer_pool_tenant_live_bytes": ("gauge", "bytes", "tenant_id", "tenant_live_bytes", None),
    "buffer_pool_tenant_outstanding_buffers": (
        "gauge", "", "tenant_id", "tenant_outstanding_buffers", None),
    "buffer_pool_soft_limit_exceeded": (
        "counter", "", "tenant_id", "tenant_soft_limit_exceeded_total", None),
    "buffer_pool_hard_limit_refusals": (
        "counter", "", "tenant_id", "hard_limit_refusals_total", None),
    "buffer_pool_promotions": ("counter", "", None, "promotions_total", None),
    "buffer_pool_pool_limit_refusals": ("counter", "", None, "pool_limit_refusals_total", None),
    "buffer_pool_too_large": ("counter", "", None, "too_large_total", None),
    "buffer_pool_alloc_failures": ("counter", "", None, "alloc_failures_total", None),
    "buffer_pool_decayed_slabs": ("counter", "", "class", "decayed_slabs_total", POOLED),
    "buffer_pool_decayed_bytes": ("counter", "bytes", "class", "decayed_bytes_total", POOLED),
    "buffer_pool_waiters": ("gauge", "", None, "waiters", None),
    "buffer_pool_wait_seconds": ("counter", "seconds", None, "wait_seconds_total", None),
    "buffer_pool_tenant_waiters": ("gauge", "", "tenant_id", "tenant_waiters", None),
    "buffer_pool_tenant_wait_seconds": (
        "counter", "seconds", "tenant_id", "tenant_wait_seconds_total", None),
    "buffer_pool_tenant_hard_limit_bytes": (
        "gauge", "bytes", "tenant_id", "tenant_hard_limit_bytes", None),
    "buffer_pool_waits_abandoned": ("counter", "", None, "waits_abandoned_total", None),
    "buffer_pool_tenant_waits_abandoned": (
        "counter", "", "tenant_id", "tenant_waits_abandoned_total", None),
    "buffer_pool_tenant_guarantee_bytes": (
        "gauge", "bytes", "tenant_id", "tenant_guarantee_bytes", None),
}


def expected_samples(snapshot):
    """(sample name, frozenset of labels) -> value, from the snapshot and the contract."""
    expected = {}
    for family, (kind, _unit, label, field, always) in CONTRACT.items():
        sample = family + "_total" if kind == "counter" else family
        value = snapshot[field]
        if label is None:
            expected[(sample, frozenset())] = value
            continue
        values = dict(value)
        for cls in always or []:
            values.setdefault(cls, 0)
        for key, v in values.items():
            if family == "buffer_pool_idle_bytes":
                v = v * CAPACITY[key]
            expected[(sample, frozenset({(label, key)}))] = v
    return expected


def main(metrics_path, snapshot_path):
    # Bytes, decoded by hand: text mode would turn a `\r` inside a label value into `\n`.
    with open(metrics_path, "rb") as f:
        text = f.read().decode("utf-8")
    with open(snapshot_path, "rb") as f:
        snapshot = json.loads(f.read().decode("utf-8"))

    errors = []
    families = list(text_string_to_metric_families(text))  # raises on any parse error

    got = {}
    seen_families = set()
    for fam in families:
        if fam.name in seen_families:
            errors.append(f"family {fam.name} appears twice")
        seen_families.add(fam.name)
        contract = CONTRACT.get(fam.name)
        if contract is None:
            errors.append(f"family {fam.name} is not in the contract")
            continue
        kind, unit, _label, _field, _always = contract
        if fam.type != kind:
            errors.append(f"family {fam.name} has type {fam.type}, expected {kind}")
        if fam.unit != unit:
            errors.append(f"family {fam.name} has unit {fam.unit!r}, expected {unit!r}")
        if not fam.documentation.strip():
            errors.append(f"family {fam.name} has no HELP text")
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            if key in got:
                errors.append(f"duplicate series {s.name}{dict(s.labels)!r}")
            got[key] = s.value
            if s.timestamp is not None or s.exemplar is not None:
                errors.append(f"unexpected timestamp or exemplar on {s.name}")
    # The parser keeps one of two identical series silently: count the lines as well.
    # A label value never holds a raw newline (it is escaped), so one line is one sample.
    lines = [line for line in text.split("\n") if line and not line.startswith("#")]
    if len(lines) != sum(len(fam.samples) for fam in families):
        errors.append(f"{len(lines)} sample lines but the parser kept "
                      f"{sum(len(fam.samples) for fam in families)} samples")
    series = [line.rsplit(" ", 1)[0] for line in lines]
    for dup in sorted({s for s in series if series.count(s) > 1}):
        errors.append(f"series written twice: {dup}")
    for family in CONTRACT:
        if family not in seen_families:
            errors.append(f"family {family} is missing")

    expected = expected_samples(snapshot)
    for key, value in sorted(expected.items(), key=repr):
        if key not in got:
            errors.append(f"missing series {key[0]}{dict(key[1])!r} (expected {value})")
        elif isinstance(value, float):
            # Seconds: the text carries what f64 prints, read back to the same float.
            if got[key] != value:
                errors.append(f"{key[0]}{dict(key[1])!r} = {got[key]}, snapshot says {value}")
        elif got[key] != float(value) or int(got[key]) != value:
            errors.append(f"{key[0]}{dict(key[1])!r} = {got[key]}, snapshot says {value}")
    for key in sorted(set(got) - set(expected), key=repr):
        errors.append(f"unexpected series {key[0]}{dict(key[1])!r} = {got[key]}")

    # Tenant ids, compared as strings: every id the snapshot has, exactly, in every family.
    tenant_ids = set(snapshot["tenant_live_bytes"])
    for family, (kind, _unit, label, field, _always) in CONTRACT.items():
        if label != "tenant_id":
            continue
        sample = family + "_total" if kind == "counter" else family
        ids = {dict(labels)["tenant_id"] for (name, labels) in got if name == sample}
        if ids != set(snapshot[field]):
            errors.append(
                f"{sample}: tenant ids differ: only in text {sorted(ids - set(snapshot[field]))!r}, "
                f"only in snapshot {sorted(set(snapshot[field]) - ids)!r}")

    idle_sum = sum(v for (name, _), v in got.items() if name == "buffer_pool_idle_bytes")
    if idle_sum != snapshot["idle_bytes"]:
        errors.append(f"idle bytes by class sum to {idle_sum}, snapshot idle_bytes is "
                      f"{snapshot['idle_bytes']}")

    if errors:
        for e in errors:
            print("error:", e)
        print(f"FAILED: {len(errors)} difference(s)")
        return 1
    print(f"ok: {len(families)} families, {len(got)} samples, {len(tenant_ids)} tenant ids "
          f"read back exactly by prometheus_client's OpenMetrics parser")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
