//! `diagnostics`: what the pool's diagnostics cost on the hot path.
//!
//! The Small 64-byte cycle on pools that differ only in leak tracking: off (the default,
//! one branch per acquire), sampling one buffer in a million (the per-thread countdown runs
//! on every acquire), and one in 64 (a sampled acquire and its drop take the tracker's
//! lock). The outstanding-buffer figures of the snapshot have no arm: they are derived from
//! counters the pool keeps anyway (per class) and from the tenant account's reference count
//! (per tenant), so no instruction of the hot path computes them.

use std::hint::black_box;

use axon_buffer::BufferPool;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;
use common::{config, source};

fn diagnostics(c: &mut Criterion) {
    let src = source(64);
    let pools = [
        ("tracking-off", BufferPool::builder().build()),
        (
            "tracking-1-in-1M",
            BufferPool::builder().leak_tracking(1_000_000).build(),
        ),
        (
            "tracking-1-in-64",
            BufferPool::builder().leak_tracking(64).build(),
        ),
    ];
    let mut group = c.benchmark_group("diagnostics-small-64B");
    group.throughput(Throughput::Bytes(64));
    for (name, pool) in &pools {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut buf = pool.acquire(black_box(4096));
                buf.extend_from_slice(black_box(&src[..]));
                black_box(&buf);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = diagnostics
}
criterion_main!(benches);
