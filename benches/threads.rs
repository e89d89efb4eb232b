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
//! - `handoff` (issue 19, run with `cargo bench --bench threads -- handoff [ROUNDS]`): the
//!   everyday consumer thread. Thread A (pinned to CPU 0) makes a batch of 16 buffers
//!   (acquire 4 KiB untenanted, write 64 bytes, `freeze()`) and hands the batch to thread
//!   B (pinned to CPU 1), which drops all 16 and acks; A waits for the ack before the next
//!   batch. Per buffer: (median batch make + median batch drop) / 16, the waits and the
//!   channel left out. Control `handoff-same`: A drops its own batch (and still pings B,
//!   so both arms have the same shape). Interleaved with them, round after round in a
//!   rotating order: the same-thread Small cycle untenanted and tenanted, the floor (one
//!   page-aligned buffer reused: clear + write), and the two-thread cycling on A and B at
//!   once. Ratios are taken within each round; the figure is their median over rounds.
//!   Three pairs of diagnostic arms split the cross-thread cost, each cross and same:
//!   `handoff-*-buf` hands the buffers over unfrozen (the pool without `freeze`'s owner
//!   box), `box-*` hands over `Bytes::from_owner` of a plain 64-byte owner (the owner box
//!   alone, no pool), and `raw-*` hands over 64-byte items read on drop (moving the items
//!   between cores, nothing else). B also cycles buffers (the two-cycling arm), so it has a
//!   magazine of its own after the first round; `dropper-cross` and `dropper-cross-buf`
//!   hand the same batches to thread C instead, pinned to CPU 1 too, which only ever drops
//!   (a channel's receiver, tokio's blocking pool) and blocks between batches (outside the
//!   timed drop), so they measure the consumer that never acquires. `HANDOFF_SPLIT=1`
//!   prints each round's make and drop halves.
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
use criterion::{criterion_group, Criterion};

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

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    if args.next().as_deref() == Some("handoff") {
        handoff::run(args.next().and_then(|n| n.parse().ok()).unwrap_or(21));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

mod handoff {
    //! The `handoff` method of the module docs.

    use std::hint::black_box;
    use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
    use std::thread;
    use std::time::{Duration, Instant};

    use axon_buffer::{BufferPool, PooledBuf};
    use bytes::Bytes;

    use super::{snooze, SMALL, WRITE};

    /// Buffers a batch.
    const BATCH: usize = 16;
    /// Batches per handoff arm per round.
    const BATCHES: usize = 2_000;
    /// Cycles per cycling arm per round.
    const CYCLES: u64 = 100_000;

    /// What a batch carries: frozen buffers (the method), or the buffers themselves (the
    /// `-buf` arms, a diagnostic: the same handoff without `freeze`'s owner box).
    enum Item {
        Frozen(#[allow(dead_code)] Bytes),
        Buf(#[allow(dead_code)] PooledBuf),
        Raw(#[allow(dead_code)] Raw),
    }

    /// The floor's buffer: one page-aligned Small buffer, reused.
    #[repr(align(4096))]
    struct Page([u8; SMALL]);

    /// The `raw-` arms' item: 64 bytes written by A and read by whoever drops it (as a
    /// buffer's drop reads its fields), no pool and no allocation: what moving the
    /// batch's items between cores costs by itself.
    struct Raw([u64; 8]);

    impl Drop for Raw {
        fn drop(&mut self) {
            black_box(self.0.iter().sum::<u64>());
        }
    }

    /// The `box-` arms' owner: no pool at all, only `Bytes::from_owner`'s box (of about
    /// the size a frozen buffer's is), to tell the allocator's cost from the pool's.
    struct Plain([u8; 64]);

    impl AsRef<[u8]> for Plain {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    enum Job {
        /// Drop the batch, timing it; send it back empty.
        Drop(Vec<Item>),
        /// Send it back untouched (the control's ping).
        Ping(Vec<Item>),
        /// Cycle Small buffers `n` times.
        Cycle(u64),
        Quit,
    }

    enum Done {
        Batch(Vec<Item>, Duration),
        Cycled,
    }

    /// Pins the calling thread to `cpu`.
    fn pin(cpu: usize) {
        #[cfg(target_os = "linux")]
        // SAFETY: `set` is a plain bit set, zeroed then written by the libc macros, and
        // `sched_setaffinity` only reads `size_of_val(&set)` bytes of it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                eprintln!("handoff: could not pin to CPU {cpu}");
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = cpu;
    }

    fn recv<T>(rx: &Receiver<T>) -> T {
        let mut step = 0;
        loop {
            match rx.try_recv() {
                Ok(v) => return v,
                Err(TryRecvError::Empty) => snooze(&mut step),
                Err(TryRecvError::Disconnected) => panic!("handoff peer hung up"),
            }
        }
    }

    #[inline(always)]
    fn cycle(pool: &BufferPool, data: &[u8]) {
        let mut buf = pool.acquire(black_box(SMALL));
        buf.extend_from_slice(black_box(data));
        black_box(&buf);
    }

    /// Thread C: drops what it is sent and never acquires; it blocks between batches, so it
    /// takes no time from B on their shared CPU.
    fn dropper(jobs: Receiver<Job>, done: Sender<Done>) {
        pin(1);
        while let Ok(job) = jobs.recv() {
            match job {
                Job::Drop(batch) => drop_batch(batch, &done),
                Job::Quit => return,
                Job::Ping(_) | Job::Cycle(_) => unreachable!("C only drops"),
            }
        }
    }

    /// Drops a batch's buffers, timed, and sends the emptied batch back with the time.
    fn drop_batch(mut batch: Vec<Item>, done: &Sender<Done>) {
        let start = Instant::now();
        batch.clear();
        let took = start.elapsed();
        black_box(&batch);
        done.send(Done::Batch(batch, took))
            .expect("producer hung up");
    }

    /// Thread B: drops what it is sent, or cycles.
    fn consumer(jobs: Receiver<Job>, done: Sender<Done>) {
        pin(1);
        let pool = BufferPool::global();
        let data = [7u8; WRITE];
        loop {
            match recv(&jobs) {
                Job::Drop(batch) => drop_batch(batch, &done),
                Job::Ping(batch) => {
                    done.send(Done::Batch(batch, Duration::ZERO))
                        .expect("hung up");
                }
                Job::Cycle(n) => {
                    for _ in 0..n {
                        cycle(pool, &data);
                    }
                    done.send(Done::Cycled).expect("producer hung up");
                }
                Job::Quit => return,
            }
        }
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    const ARMS: [&str; 14] = [
        "raw-cross",
        "raw-same",
        "box-cross",
        "box-same",
        "handoff-cross",
        "handoff-same",
        "handoff-cross-buf",
        "handoff-same-buf",
        "dropper-cross",
        "dropper-cross-buf",
        "cycle",
        "cycle-tenant",
        "floor",
        "two-cycling",
    ];

    pub(super) fn run(rounds: usize) {
        pin(0);
        let pool = BufferPool::global();
        let tenant = pool.tenant("bench");
        let data = [7u8; WRITE];
        let data = &data[..];
        let (to_b, jobs) = mpsc::channel::<Job>();
        let (to_a, done) = mpsc::channel::<Done>();
        let (to_c, drops) = mpsc::channel::<Job>();
        let c = {
            let to_a = to_a.clone();
            thread::spawn(move || dropper(drops, to_a))
        };
        let b = thread::spawn(move || consumer(jobs, to_a));
        let mut floor = Box::new(Page([0; SMALL]));
        let mut batch: Option<Vec<Item>> = Some(Vec::with_capacity(BATCH));
        // HANDOFF_SPLIT=1: each handoff round's make and drop halves on stderr.
        let split = std::env::var_os("HANDOFF_SPLIT").is_some();

        // One round of one arm: ns per buffer or per cycle.
        let mut measure = |arm: &str| -> f64 {
            match arm {
                "handoff-cross" | "handoff-same" | "handoff-cross-buf" | "handoff-same-buf"
                | "dropper-cross" | "dropper-cross-buf" | "box-cross" | "box-same"
                | "raw-cross" | "raw-same" => {
                    let cross = arm.contains("-cross");
                    let to = if arm.starts_with("dropper-") {
                        &to_c
                    } else {
                        &to_b
                    };
                    let plain = arm.starts_with("box-");
                    let raw = arm.starts_with("raw-");
                    let frozen = !arm.ends_with("-buf");
                    let mut make = Vec::with_capacity(BATCHES);
                    let mut drop_ns = Vec::with_capacity(BATCHES);
                    let mut v = batch.take().expect("batch");
                    for _ in 0..BATCHES {
                        let start = Instant::now();
                        for _ in 0..BATCH {
                            if raw {
                                v.push(Item::Raw(Raw(black_box([7; 8]))));
                                continue;
                            }
                            if plain {
                                v.push(Item::Frozen(Bytes::from_owner(Plain(black_box([7; 64])))));
                                continue;
                            }
                            let mut buf = pool.acquire(black_box(SMALL));
                            buf.extend_from_slice(black_box(data));
                            v.push(match frozen {
                                true => Item::Frozen(buf.freeze()),
                                false => Item::Buf(buf),
                            });
                        }
                        make.push(start.elapsed().as_nanos() as f64);
                        if cross {
                            to.send(Job::Drop(v)).expect("B or C hung up");
                        } else {
                            let start = Instant::now();
                            v.clear();
                            drop_ns.push(start.elapsed().as_nanos() as f64);
                            to_b.send(Job::Ping(v)).expect("B hung up");
                        }
                        let Done::Batch(back, took) = recv(&done) else {
                            unreachable!("a batch was sent")
                        };
                        v = back;
                        if cross {
                            drop_ns.push(took.as_nanos() as f64);
                        }
                    }
                    batch = Some(v);
                    let (make, drop_ns) = (median(make), median(drop_ns));
                    if split {
                        eprintln!(
                            "{arm}: make {:.1} ns, drop {:.1} ns per buffer",
                            make / BATCH as f64,
                            drop_ns / BATCH as f64
                        );
                    }
                    (make + drop_ns) / BATCH as f64
                }
                "cycle" | "cycle-tenant" | "floor" => {
                    let start = Instant::now();
                    match arm {
                        "cycle" => {
                            for _ in 0..CYCLES {
                                cycle(pool, data);
                            }
                        }
                        "cycle-tenant" => {
                            for _ in 0..CYCLES {
                                let mut buf = tenant.acquire(black_box(SMALL));
                                buf.extend_from_slice(black_box(data));
                                black_box(&buf);
                            }
                        }
                        _ => {
                            for _ in 0..CYCLES {
                                let page = &mut floor.0;
                                let mut len = black_box(0usize); // clear
                                page[len..len + WRITE].copy_from_slice(black_box(data));
                                len += WRITE;
                                black_box((&page[..len], len));
                            }
                        }
                    }
                    start.elapsed().as_nanos() as f64 / CYCLES as f64
                }
                _ => {
                    let start = Instant::now();
                    to_b.send(Job::Cycle(CYCLES)).expect("B hung up");
                    for _ in 0..CYCLES {
                        cycle(pool, data);
                    }
                    let Done::Cycled = recv(&done) else {
                        unreachable!("B was cycling")
                    };
                    start.elapsed().as_nanos() as f64 / CYCLES as f64
                }
            }
        };

        for arm in ARMS {
            measure(arm); // warm up
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); ARMS.len()];
        for round in 0..rounds {
            for i in 0..ARMS.len() {
                let a = (i + round) % ARMS.len();
                times[a].push(measure(ARMS[a]));
            }
        }
        to_b.send(Job::Quit).expect("B hung up");
        b.join().expect("B panicked");
        to_c.send(Job::Quit).expect("C hung up");
        c.join().expect("C panicked");

        println!(
            "handoff: batches of {BATCH} Small buffers ({BATCHES} a round), cycles of {CYCLES}; \
             {rounds} rounds, arms interleaved\n"
        );
        println!("| arm | median | min | max |");
        println!("|---|---|---|---|");
        for (a, name) in ARMS.iter().enumerate() {
            let t = &times[a];
            let min = t.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = t.iter().cloned().fold(0.0, f64::max);
            println!(
                "| `{name}` | {:.1} ns | {min:.1} ns | {max:.1} ns |",
                median(t.clone())
            );
        }
        println!("\n| ratio (median of per-round ratios) | value | target |");
        println!("|---|---|---|");
        for (x, y, target) in [
            ("handoff-cross", "handoff-same", "<= 1.5 (issue 19)"),
            ("handoff-cross-buf", "handoff-same-buf", "(no freeze)"),
            ("dropper-cross", "handoff-same", "(C never acquires)"),
            (
                "dropper-cross-buf",
                "handoff-same-buf",
                "(C never acquires, no freeze)",
            ),
            ("box-cross", "box-same", "(no pool: the owner box alone)"),
            ("raw-cross", "raw-same", "(no pool, no allocation)"),
            ("cycle-tenant", "cycle", "<= 1.2"),
            ("cycle", "floor", "stretch <= 3"),
            ("two-cycling", "cycle", ""),
        ] {
            let (ix, iy) = (
                ARMS.iter().position(|n| *n == x).expect("arm"),
                ARMS.iter().position(|n| *n == y).expect("arm"),
            );
            let ratios = times[ix]
                .iter()
                .zip(&times[iy])
                .map(|(p, q)| p / q)
                .collect();
            println!("| `{x}` / `{y}` | {:.2} | {target} |", median(ratios));
        }
    }
}
