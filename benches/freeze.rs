//! `freeze`: a filled buffer becomes a `bytes::Bytes`, is cloned once, and both drop.
//!
//! Groups `freeze-small` (4 KiB), `freeze-large` (1 MiB) and `freeze-huge` (10 MiB), arms:
//!
//! - `axon`: `PooledBuf::freeze()` (zero copy), one clone, both dropped, which returns
//!   the slab to the pool;
//! - `bytes-copy`: `Bytes::copy_from_slice` of the same filled bytes, one clone, both
//!   dropped: what a pool without a zero-copy freeze costs;
//! - `from-owner-floor`: `Bytes::from_owner` of an owner whose drop does nothing (a
//!   `&'static [u8]`), one clone, both dropped: what `bytes` itself charges for any
//!   zero-copy freeze through `from_owner` (its owner box and reference counts), the floor
//!   under the `axon` arm.
//!
//! Only freeze, clone and drop are timed (`iter_custom`). Filling is not: the buffers of
//! a batch are filled first, then the clock runs over the whole batch, so the cost of
//! reading the clock (about 20 ns here) is shared by `BATCH` buffers. Criterion plans
//! its iteration counts from the wall time of its warm-up, filling included, so the
//! wall time of each arm stays near its measurement time even at 10 MiB.

use std::hint::black_box;
use std::time::{Duration, Instant};

use axon_buffer::{BufferPool, PooledBuf};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

mod common;
use common::{config, source, KIB, MIB};

/// An owner for `Bytes::from_owner` whose drop frees nothing.
struct StaticOwner(&'static [u8]);

impl AsRef<[u8]> for StaticOwner {
    fn as_ref(&self) -> &[u8] {
        self.0
    }
}

/// Buffers filled ahead of one timed region.
const BATCH: u64 = 8;

fn freeze(c: &mut Criterion) {
    let pool = BufferPool::global();
    // 1 MiB is not one of the targets: it fits in this machine's 4 MiB L2, so next to
    // 10 MiB it tells a cost that grows with the size apart from cache misses caused by
    // the fill that evicted the pool's own data.
    for (name, size) in [
        ("freeze-small", 4 * KIB),
        ("freeze-large", MIB),
        ("freeze-huge", 10 * MIB),
    ] {
        let src = source(size);
        let mut group = c.benchmark_group(name);
        group.sampling_mode(SamplingMode::Flat);

        group.bench_function("axon", |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                let mut filled: Vec<PooledBuf> = Vec::with_capacity(BATCH as usize);
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    left -= n;
                    for _ in 0..n {
                        let mut buf = pool.acquire(size);
                        buf.extend_from_slice(&src);
                        filled.push(buf);
                    }
                    let start = Instant::now();
                    for buf in filled.drain(..) {
                        let frozen = black_box(buf.freeze());
                        let clone = black_box(frozen.clone());
                        drop(clone);
                        drop(frozen);
                    }
                    measured += start.elapsed();
                }
                measured
            })
        });

        // Leaked once per group: the owner must outlive every `Bytes` and free nothing.
        let leaked: &'static [u8] = Box::leak(src.clone().into_boxed_slice());
        group.bench_function("from-owner-floor", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let frozen = black_box(Bytes::from_owner(StaticOwner(black_box(leaked))));
                    let clone = black_box(frozen.clone());
                    drop(clone);
                    drop(frozen);
                }
                start.elapsed()
            })
        });
        group.bench_function("bytes-copy", |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    left -= n;
                    let start = Instant::now();
                    for _ in 0..n {
                        let frozen = black_box(Bytes::copy_from_slice(black_box(&src)));
                        let clone = black_box(frozen.clone());
                        drop(clone);
                        drop(frozen);
                    }
                    measured += start.elapsed();
                }
                measured
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = config().sample_size(20);
    targets = freeze
}
criterion_main!(benches);
