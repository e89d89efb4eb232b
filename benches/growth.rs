//! `growth`: 3 MiB written in 64 KiB pieces into a buffer that starts small, then
//! dropped.
//!
//! Arms: `axon` (a Small buffer from the global pool, promoted class by class as it
//! fills: Small, Medium, Large, Huge), `vec` (`Vec::new()`, doubling) and `bytes-mut`
//! (`BytesMut::new()`, doubling).

use std::hint::black_box;

use axon_buffer::BufferPool;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;
use common::{config, source, KIB, MIB};

const TOTAL: usize = 3 * MIB;
const PIECE: usize = 64 * KIB;

fn growth(c: &mut Criterion) {
    let pool = BufferPool::global();
    let src = source(PIECE);
    let piece = &src[..];
    let pieces = TOTAL / PIECE;
    let mut group = c.benchmark_group("growth-3MiB");
    group.throughput(Throughput::Bytes(TOTAL as u64));

    group.bench_function("axon", |b| {
        b.iter(|| {
            let mut buf = pool.acquire(black_box(64));
            for _ in 0..pieces {
                buf.extend_from_slice(black_box(piece));
            }
            black_box(&buf);
        })
    });

    group.bench_function("vec", |b| {
        b.iter(|| {
            let mut buf = Vec::new();
            for _ in 0..pieces {
                buf.extend_from_slice(black_box(piece));
            }
            black_box(&buf);
        })
    });

    group.bench_function("bytes-mut", |b| {
        b.iter(|| {
            let mut buf = BytesMut::new();
            for _ in 0..pieces {
                buf.extend_from_slice(black_box(piece));
            }
            black_box(&buf);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = growth
}
criterion_main!(benches);
