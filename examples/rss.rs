//! What the process's resident memory (RSS) does through bursts of Huge buffers, their drop
//! back to the pool, a quiet period, and the idle decay, with the system allocator and
//! glibc's default settings. No call to `trim()`: the decay thread (on by default) frees the
//! idle slabs and gives their pages back.
//!
//! ```sh
//! cargo run --release --example rss              # decay (no trim call)
//! cargo run --release --example rss -- --trim    # the same rounds, with trim() instead
//! cargo run --release --example rss -- --quiet-secs 60   # then the decay thread's wakeups
//! ```
//!
//! With `--quiet-secs N`, the example then measures the quiet process for N seconds twice,
//! from `/proc/self/task/*/status` and `/proc/self/stat`: with nothing idle (the decay
//! thread must not wake at all: the example fails if it does), and with one Small slab
//! idle in a second pool with the default 20 s timeout (the thread ticks every 5 s until
//! the slab is freed, then parks).
//!
//! Three rounds of 40 Huge (10 MiB) buffers, each written in full. Round 3 keeps its newest
//! buffer alive: with glibc, rounds 2 and 3 take their 10 MiB blocks from the heap (its
//! dynamic mmap threshold rose when round 1's blocks were freed), and a live block at the top
//! of the heap keeps everything below it resident, unless the pages are given back. Round 4
//! is the same bytes in Small (4 KiB) slabs, its newest kept alive: glibc serves those from
//! its heap and the pool frees them without a madvise, so they leave only through the
//! `malloc_trim` the decay calls (`BufferPoolBuilder::trim_allocator`). After each round
//! RSS must come back to within 16 MiB of what it was before the round, within the quiet
//! period (three idle timeouts and 2 s); the example exits non-zero if it does not.
//!
//! Linux only (it reads `VmRSS` from `/proc/self/status`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use axon_buffer::{BufferPool, PoolClass, PooledBuf};
use clap::Parser;

const MIB: u64 = 1024 * 1024;

/// Small slabs in the bytes of one Huge slab.
const SMALL_PER_HUGE: usize = PoolClass::Huge.capacity() / PoolClass::Small.capacity();

#[derive(Parser, Debug)]
#[command(about = "RSS through bursts of Huge and Small buffers, idle decay and trim")]
struct Args {
    /// Free the idle slabs with trim() right after each burst instead of waiting for the
    /// decay.
    #[arg(long)]
    trim: bool,
    /// The pool's idle timeout, in milliseconds (short, so the example runs in seconds).
    #[arg(long, default_value_t = 1000)]
    idle_timeout_ms: u64,
    /// Huge buffers per burst.
    #[arg(long, default_value_t = 40)]
    burst: usize,
    /// How far above its value before the burst RSS may stay, in MiB.
    #[arg(long, default_value_t = 16)]
    tolerance_mib: u64,
    /// Then measure the quiet process's wakeups for this many seconds (0: skip).
    #[arg(long, default_value_t = 0)]
    quiet_secs: u64,
}

/// Context switches (voluntary, involuntary) of the decay thread, if it runs (Linux shows
/// the first 15 bytes of its name), and of the whole process.
fn switches() -> (Option<(u64, u64)>, u64) {
    let mut decay = None;
    let mut all = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task").path();
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        let (vol, invol) = (
            field("voluntary_ctxt_switches:"),
            field("nonvoluntary_ctxt_switches:"),
        );
        all += vol + invol;
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("axon-buffer-dec") {
            decay = Some((vol, invol));
        }
    }
    (decay, all)
}

/// User + system CPU time of the process so far, in clock ticks (`/proc/self/stat`).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Sleeps `secs` seconds and reports what the decay thread and the process did meanwhile;
/// returns the decay thread's wakeups (its context switches).
fn quiet(secs: u64, what: &str) -> u64 {
    let (decay_before, all_before) = switches();
    let cpu_before = cpu_ticks();
    std::thread::sleep(Duration::from_secs(secs));
    let (decay_after, all_after) = switches();
    let cpu = cpu_ticks() - cpu_before;
    let wakeups = match (decay_before, decay_after) {
        (Some(a), Some(b)) => (b.0 - a.0) + (b.1 - a.1),
        _ => 0,
    };
    println!(
        "quiet {secs} s, {what}: decay thread {} wakeups ({}), process {} context switches \
         (this thread's sleep is one), CPU {} ticks",
        wakeups,
        if decay_after.is_some() {
            "running"
        } else {
            "not started"
        },
        all_after - all_before,
        cpu,
    );
    wakeups
}

/// Resident set size in bytes, from `/proc/self/status`. Reads into a stack buffer: an
/// allocation here would itself land above the freed blocks in glibc's heap.
fn rss_bytes() -> u64 {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    let mut file = std::fs::File::open("/proc/self/status").expect("/proc/self/status");
    let n = file.read(&mut buf).expect("read /proc/self/status");
    let text = std::str::from_utf8(&buf[..n]).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

struct Clock(Instant);

impl Clock {
    fn report(&self, stage: &str, pool: &BufferPool) {
        let snap = pool.snapshot();
        println!(
            "{:>6.1} s  {stage:<44} RSS {:>4} MiB  live {:>4} MiB  idle {:>4} MiB  decayed {:>4} MiB",
            self.0.elapsed().as_secs_f64(),
            rss_bytes() / MIB,
            snap.live_bytes / MIB,
            snap.idle_bytes / MIB,
            snap.decayed_bytes_total.values().sum::<u64>() / MIB,
        );
    }
}

/// Acquires `n` buffers of `class` and writes every byte, so every page is resident.
fn burst(pool: &BufferPool, class: PoolClass, n: usize) -> Vec<PooledBuf> {
    (0..n)
        .map(|i| {
            let mut buf = pool.acquire(class.capacity());
            buf.resize(buf.capacity(), i as u8 | 1);
            buf
        })
        .collect()
}

/// Bytes freed by the decay so far, every class.
fn decayed_bytes(pool: &BufferPool) -> u64 {
    pool.snapshot().decayed_bytes_total.values().sum()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let timeout = Duration::from_millis(args.idle_timeout_ms);
    // The crate's defaults but a short timeout: the decay thread is on by default.
    let pool = BufferPool::builder().idle_timeout(Some(timeout)).build();
    let clock = Clock(Instant::now());
    println!(
        "{} Huge buffers (10 MiB) per burst, written in full; system allocator, glibc defaults; \
         idle_timeout {} ms, decay thread on (the default); {}\n",
        args.burst,
        args.idle_timeout_ms,
        if args.trim {
            "trim() after each burst"
        } else {
            "no trim() call"
        },
    );
    clock.report("start", &pool);
    let mut failures = 0;
    let mut kept = None;
    for round in 1..=4 {
        let before = rss_bytes();
        // Round 4: the same bytes in Small (4 KiB) slabs, which glibc serves from its
        // heap, never by mmap.
        let (class, n) = match round {
            4 => (PoolClass::Small, args.burst * SMALL_PER_HUGE),
            _ => (PoolClass::Huge, args.burst),
        };
        let mut bufs = burst(&pool, class, n);
        clock.report(&format!("round {round}: burst held"), &pool);
        if round >= 3 {
            kept = bufs.pop(); // the newest stays alive, on top of the heap
        }
        drop(bufs);
        clock.report(
            &format!("round {round}: dropped (idle up to the cap)"),
            &pool,
        );
        let deadline = Instant::now() + 3 * timeout + Duration::from_secs(2);
        if args.trim {
            let freed = pool.trim();
            clock.report(
                &format!("round {round}: trim() freed {} MiB", freed / MIB),
                &pool,
            );
        } else {
            // Quiet: no traffic, no call. The decay thread frees what stays idle, and counts
            // it decayed once its pages are gone; the allocator's trim comes after the count
            // (once per pass), so RSS is watched until it is back or the deadline passes.
            let decayed_by = decayed_bytes(&pool) + pool.snapshot().idle_bytes;
            let back = |rss: u64| rss <= before + args.tolerance_mib * MIB;
            while (decayed_bytes(&pool) < decayed_by || !back(rss_bytes()))
                && Instant::now() < deadline
            {
                std::thread::sleep(timeout / 4);
                clock.report(&format!("round {round}: quiet"), &pool);
            }
        }
        let after = rss_bytes();
        let ok = after <= before + args.tolerance_mib * MIB;
        println!(
            "          round {round}: RSS {} MiB before the burst, {} MiB after: {}",
            before / MIB,
            after / MIB,
            if ok { "back" } else { "NOT BACK" }
        );
        failures += usize::from(!ok);
    }
    drop(kept);
    clock.report("end", &pool);
    if args.quiet_secs > 0 {
        // Let the last slab decay and the thread park, then nothing is idle.
        let deadline = Instant::now() + 3 * timeout + Duration::from_secs(2);
        while pool.snapshot().idle_bytes > 0 && Instant::now() < deadline {
            std::thread::sleep(timeout / 4);
        }
        std::thread::sleep(timeout);
        clock.report("quiet: nothing idle", &pool);
        if quiet(args.quiet_secs, "nothing idle") > 0 {
            eprintln!("error: the decay thread woke while nothing was idle");
            failures += 1;
        }
        let defaults = BufferPool::default();
        drop(defaults.acquire(100));
        quiet(
            args.quiet_secs,
            "one Small slab idle in a pool with the default 20 s timeout",
        );
        println!(
            "          that slab decayed: {}",
            defaults.snapshot().decayed_slabs_total[&PoolClass::Small] == 1
        );
    }
    if failures > 0 {
        eprintln!("error: RSS did not come back after {failures} round(s)");
        return ExitCode::FAILURE;
    }
    println!(
        "ok: RSS came back within {} MiB after every round",
        args.tolerance_mib
    );
    ExitCode::SUCCESS
}
