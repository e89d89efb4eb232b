//! `cycle`: acquire a buffer for S bytes, write W bytes into it, drop it.
//!
//! One criterion group per (class, write) pair, `cycle-<class>-<write>`, with S the
//! capacity of each of axon-buffer's size classes (4 KiB, 64 KiB, 1 MiB, 10 MiB) and W
//! either 64 bytes (`64B`, a small frame in a big buffer: the bookkeeping is what
//! shows) or S (`full`, the buffer filled by `extend_from_slice` of a prepared source:
//! the memory traffic is what shows). Every group holds the same arms:
//!
//! - `axon`: `BufferPool::global().acquire(S)`, no tenant;
//! - `axon-tenant`: the same through a `Tenant` handle created once, outside the loop;
//! - `axon-tenant-wait` (64-byte groups): `Tenant::acquire_wait` with nobody waiting,
//!   polled once with a no-op waker (it is always ready): what waiting costs when unused;
//! - `built-decay`, `built-no-decay` (64-byte groups): a pool of its own
//!   (`BufferPool::builder().build()`, which also pays an `Arc` count per buffer) with
//!   the default idle decay (20 s), and with `idle_timeout(None)`: what the decay costs;
//! - `vec`: `Vec::with_capacity(S)` on the system allocator;
//! - `bytes-mut`: `BytesMut::with_capacity(S)`;
//! - `byte-pool`, `object-pool`, `lifeguard`, `opool`: the peer crates, each as its docs
//!   show it, one pool per buffer size (the way those single-size pools are used);
//! - `seed-mutex`: the seed's pool, a `std::sync::Mutex<Vec<Vec<u8>>>` free list capped
//!   at 64 slabs, with its explicit acquire and release;
//! - `floor`: one `Vec` reused (clear, then write): what any pool at best approaches.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axon_buffer::BufferPool;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use lifeguard::{MaxSize, StartingSize, Supplier};
use opool::PoolAllocator;

mod common;
use common::{config, source, CLASSES};

/// The size of the small write.
const SMALL_WRITE: usize = 64;

/// The seed's free list (`axon/buffer/pool.rs` before this crate): a mutex over a stack
/// of slabs, at most 64 kept, explicit acquire and release.
struct SeedPool {
    free: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
}

impl SeedPool {
    const MAX_IDLE: usize = 64;

    fn new(capacity: usize) -> Self {
        SeedPool {
            free: Mutex::new(Vec::new()),
            capacity,
        }
    }

    fn acquire(&self) -> Vec<u8> {
        let mut free = self.free.lock().expect("free list poisoned");
        match free.pop() {
            Some(mut slab) => {
                slab.clear();
                slab
            }
            None => Vec::with_capacity(self.capacity),
        }
    }

    fn release(&self, mut slab: Vec<u8>) {
        slab.clear();
        let mut free = self.free.lock().expect("free list poisoned");
        if free.len() < Self::MAX_IDLE {
            free.push(slab);
        }
    }
}

/// opool's allocator for buffers of one size: clear on return, and keep only slabs
/// that still have their size (the `is_valid` check of opool's README).
struct VecAlloc(usize);

impl PoolAllocator<Vec<u8>> for VecAlloc {
    fn allocate(&self) -> Vec<u8> {
        Vec::with_capacity(self.0)
    }

    fn reset(&self, obj: &mut Vec<u8>) {
        obj.clear();
    }

    fn is_valid(&self, obj: &Vec<u8>) -> bool {
        obj.capacity() == self.0
    }
}

fn cycle(c: &mut Criterion) {
    let pool = BufferPool::global();
    let tenant = pool.tenant("bench");
    let largest = CLASSES[CLASSES.len() - 1].1;
    let src = source(largest);

    for (class, size) in CLASSES {
        for (label, write) in [("64B", SMALL_WRITE), ("full", size)] {
            let data = &src[..write];
            let mut group = c.benchmark_group(format!("cycle-{class}-{label}"));
            group.throughput(Throughput::Bytes(write as u64));
            arms(&mut group, pool, &tenant, size, data);
            if write == SMALL_WRITE {
                unused_feature_arms(&mut group, &tenant, size, data);
            }
            group.finish();
        }
    }
}

/// Every arm of one group: a buffer for `size` bytes, `data` written into it, dropped.
fn arms(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    pool: &'static BufferPool,
    tenant: &axon_buffer::Tenant,
    size: usize,
    data: &[u8],
) {
    group.bench_function("axon", |b| {
        b.iter(|| {
            let mut buf = pool.acquire(black_box(size));
            buf.extend_from_slice(black_box(data));
            black_box(&buf);
        })
    });

    group.bench_function("axon-tenant", |b| {
        b.iter(|| {
            let mut buf = tenant.acquire(black_box(size));
            buf.extend_from_slice(black_box(data));
            black_box(&buf);
        })
    });

    group.bench_function("vec", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(black_box(size));
            buf.extend_from_slice(black_box(data));
            black_box(&buf);
        })
    });

    group.bench_function("bytes-mut", |b| {
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(black_box(size));
            buf.extend_from_slice(black_box(data));
            black_box(&buf);
        })
    });

    // byte-pool hands out blocks of exactly the requested length (zeroed when fresh,
    // stale when reused) and matches a returned block by its length: write over it.
    let byte_pool = byte_pool::BytePool::<Vec<u8>>::new();
    group.bench_function("byte-pool", |b| {
        b.iter(|| {
            let mut block = byte_pool.alloc(black_box(size));
            block[..data.len()].copy_from_slice(black_box(data));
            black_box(&block);
        })
    });

    // object-pool does not reset what it hands back: its docs clear after `pull`.
    let object_pool = object_pool::Pool::new(1, || Vec::with_capacity(size));
    group.bench_function("object-pool", |b| {
        b.iter(|| {
            let mut buf = object_pool.pull(|| Vec::with_capacity(size));
            buf.clear();
            buf.extend_from_slice(black_box(data));
            black_box(&buf);
        })
    });

    // lifeguard clears (`Recycleable::reset`) on return and keeps at most MaxSize.
    let lifeguard_pool = lifeguard::pool()
        .with(StartingSize(1))
        .with(MaxSize(64))
        .with(Supplier(move || Vec::<u8>::with_capacity(size)))
        .build();
    group.bench_function("lifeguard", |b| {
        b.iter(|| {
            let mut buf = lifeguard_pool.new();
            buf.extend_from_slice(black_box(data));
            black_box(&buf);
        })
    });

    let opool_pool = opool::Pool::new(64, VecAlloc(size));
    group.bench_function("opool", |b| {
        b.iter(|| {
            let mut buf = opool_pool.get();
            buf.extend_from_slice(black_box(data));
            black_box(&buf);
        })
    });

    let seed = SeedPool::new(size);
    group.bench_function("seed-mutex", |b| {
        b.iter(|| {
            let mut buf = seed.acquire();
            buf.extend_from_slice(black_box(data));
            black_box(&buf);
            seed.release(buf);
        })
    });

    let mut reused = Vec::with_capacity(size);
    group.bench_function("floor", |b| {
        b.iter(|| {
            reused.clear();
            reused.extend_from_slice(black_box(data));
            black_box(&reused);
        })
    });
}

/// The arms that show what waiting and the idle decay cost when nothing waits and
/// nothing is idle long enough to decay.
fn unused_feature_arms(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    tenant: &axon_buffer::Tenant,
    size: usize,
    data: &[u8],
) {
    let mut cx = Context::from_waker(Waker::noop());
    group.bench_function("axon-tenant-wait", |b| {
        b.iter(|| {
            let mut wait = pin!(tenant.acquire_wait(black_box(size)));
            let Poll::Ready(Ok(mut buf)) = wait.as_mut().poll(&mut cx) else {
                unreachable!("nobody waits and nothing limits: ready at once");
            };
            buf.extend_from_slice(black_box(data));
            black_box(&buf);
        })
    });
    for (arm, timeout) in [
        ("built-decay", Some(Duration::from_secs(20))),
        ("built-no-decay", None),
    ] {
        let pool = BufferPool::builder().idle_timeout(timeout).build();
        group.bench_function(arm, |b| {
            b.iter(|| {
                let mut buf = pool.acquire(black_box(size));
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = cycle
}
criterion_main!(benches);
