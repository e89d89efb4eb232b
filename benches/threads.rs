//! `threads`: the pool under two threads.
//!
//! - `threads-two-cycling`: two threads each cycle Small buffers (acquire 4 KiB, write
//!   64 bytes, drop), `iters` cycles each, side by side; the figure is the wall time
//!   divided by `iters`, the time of one cycle on each thread while the other runs too.
//!   Arms `axon` (the global pool), `vec` (`Vec::with_capacity`), and, for context,
//!   `seed-mutex`, the seed's single mutex list shared by both threads.
//! - `threads-return`: a producer acquires a Small buffer, fills its 4 KiB, freezes it
//!   and sends the `Bytes` to a consumer thread, which answers on a second channel. In
//!   `cross-thread` the consumer drops the `Bytes` (so the slab goes back to the pool
//!   from the consumer's thread) and answers `None`; in `same-thread` it answers
//!   `Some(bytes)` and the producer drops it. Both arms send the same messages; only
//!   the thread that returns the slab differs. The figure is wall time per buffer.
//!
//! The two ends poll their channels (spinning briefly, then yielding) instead of
//! blocking, so that futex wake-ups do not drown the return path in microseconds.
//!
//! Threads are spawned per sample (`std::thread::scope`) and released together by a
//! barrier; the clock runs from the barrier to the end of the last thread's loop, so
//! spawning and joining are not counted.

use std::hint::black_box;
use std::sync::mpsc::{self, TryRecvError, TrySendError};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use axon_buffer::BufferPool;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

mod common;
use common::{config, source, KIB};

const SMALL: usize = 4 * KIB;
const WRITE: usize = 64;
/// Buffers in flight from producer to consumer before the producer waits.
const IN_FLIGHT: usize = 64;

/// Runs `work(iters)` on two threads at once and returns the time from their common
/// start to the end of the slower one.
fn on_two_threads<F>(iters: u64, work: F) -> Duration
where
    F: Fn(u64) + Sync,
{
    let barrier = Barrier::new(2);
    let (a, b) = thread::scope(|s| {
        let run = || {
            barrier.wait();
            let start = Instant::now();
            work(iters);
            (start, Instant::now())
        };
        let other = s.spawn(run);
        let mine = run();
        (mine, other.join().expect("bench thread panicked"))
    });
    a.1.max(b.1) - a.0.min(b.0)
}

fn two_cycling(c: &mut Criterion) {
    let pool = BufferPool::global();
    let src = source(WRITE);
    let data = &src[..];
    let mut group = c.benchmark_group("threads-two-cycling");

    group.bench_function("axon", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |n| {
                for _ in 0..n {
                    let mut buf = pool.acquire(black_box(SMALL));
                    buf.extend_from_slice(black_box(data));
                    black_box(&buf);
                }
            })
        })
    });

    group.bench_function("vec", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |n| {
                for _ in 0..n {
                    let mut buf = Vec::with_capacity(black_box(SMALL));
                    buf.extend_from_slice(black_box(data));
                    black_box(&buf);
                }
            })
        })
    });

    let seed: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    group.bench_function("seed-mutex", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |n| {
                for _ in 0..n {
                    let popped = seed.lock().expect("poisoned").pop();
                    let mut buf = popped.unwrap_or_else(|| Vec::with_capacity(SMALL));
                    buf.extend_from_slice(black_box(data));
                    black_box(&buf);
                    buf.clear();
                    let mut free = seed.lock().expect("poisoned");
                    if free.len() < 64 {
                        free.push(buf);
                    }
                }
            })
        })
    });
    group.finish();
}

/// Who drops the frozen buffer.
#[derive(Clone, Copy)]
enum Returner {
    Consumer,
    Producer,
}

/// Waits a little longer each time it is called in a row: spins first, then yields the
/// core. Polling keeps futex wake-ups, which cost microseconds and would hide the pool's
/// return path, out of the figure.
fn snooze(step: &mut u32) {
    if *step < 7 {
        for _ in 0..(1u32 << *step) {
            std::hint::spin_loop();
        }
        *step += 1;
    } else {
        thread::yield_now();
    }
}

/// Producer on this thread, consumer on a scoped one; the time per buffer sent.
fn produce_consume(pool: &BufferPool, src: &[u8], iters: u64, returner: Returner) -> Duration {
    let (to_consumer, from_producer) = mpsc::sync_channel::<Bytes>(IN_FLIGHT);
    // Unbounded, so the consumer never waits on the producer while the producer waits
    // on the consumer; the producer drains it after every send, so it stays short.
    let (to_producer, answers) = mpsc::channel::<Option<Bytes>>();
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let barrier = &barrier;
        s.spawn(move || {
            barrier.wait();
            let mut step = 0;
            loop {
                match from_producer.try_recv() {
                    Ok(bytes) => {
                        step = 0;
                        let answer = match returner {
                            Returner::Consumer => {
                                drop(bytes);
                                None
                            }
                            Returner::Producer => Some(bytes),
                        };
                        if to_producer.send(answer).is_err() {
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => snooze(&mut step),
                    Err(TryRecvError::Disconnected) => break,
                }
            }
        });
        barrier.wait();
        let start = Instant::now();
        let mut answered = 0u64;
        for _ in 0..iters {
            let mut buf = pool.acquire(SMALL);
            buf.extend_from_slice(src);
            let mut item = buf.freeze();
            let mut step = 0;
            loop {
                match to_consumer.try_send(item) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => {
                        item = back;
                        snooze(&mut step);
                    }
                    Err(TrySendError::Disconnected(_)) => panic!("consumer hung up"),
                }
                while let Ok(answer) = answers.try_recv() {
                    drop(answer);
                    answered += 1;
                }
            }
            while let Ok(answer) = answers.try_recv() {
                drop(answer);
                answered += 1;
            }
        }
        let mut step = 0;
        while answered < iters {
            match answers.try_recv() {
                Ok(answer) => {
                    drop(answer);
                    answered += 1;
                    step = 0;
                }
                Err(TryRecvError::Empty) => snooze(&mut step),
                Err(TryRecvError::Disconnected) => panic!("consumer hung up"),
            }
        }
        let elapsed = start.elapsed();
        drop(to_consumer);
        elapsed
    })
}

fn slab_return(c: &mut Criterion) {
    let pool = BufferPool::global();
    let src = source(SMALL);
    let mut group = c.benchmark_group("threads-return");
    for (name, returner) in [
        ("cross-thread", Returner::Consumer),
        ("same-thread", Returner::Producer),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| produce_consume(pool, &src, iters, returner))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = two_cycling, slab_return
}
criterion_main!(benches);
