//! What the process's resident memory (RSS) does across a burst of Huge buffers, their drop
//! back to the pool, and a `trim()`, with the system allocator.
//!
//! ```sh
//! cargo run --release --example rss
//! ```
//!
//! Linux only (it reads `VmRSS` from `/proc/self/status`); elsewhere it prints the pool's
//! figures without RSS. It is a measurement, not a test: the numbers depend on the
//! allocator and its tuning.

use axon_buffer::{BufferPool, PoolClass};

const MIB: u64 = 1024 * 1024;
const BURST: usize = 40;

/// Resident set size in bytes, from `/proc/self/status` (`None` where that does not exist).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn report(stage: &str, pool: &BufferPool) {
    let snap = pool.snapshot();
    let rss = rss_bytes().map_or_else(|| "n/a".to_owned(), |b| format!("{:>5} MiB", b / MIB));
    println!(
        "{stage:<46} RSS {rss}   live {:>4} MiB   idle {:>4} MiB ({} Huge slabs)",
        snap.live_bytes / MIB,
        snap.idle_bytes / MIB,
        snap.idle_slabs[&PoolClass::Huge],
    );
}

/// Acquires `BURST` Huge buffers and writes every byte, so every page is resident.
fn burst(pool: &BufferPool) -> Vec<axon_buffer::PooledBuf> {
    (0..BURST)
        .map(|i| {
            let mut buf = pool.acquire(PoolClass::Huge.capacity());
            buf.resize(buf.capacity(), i as u8 | 1);
            buf
        })
        .collect()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_malloc_trim() -> bool {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` is glibc's, takes a plain integer, touches only the allocator's
    // own free memory (no Rust object), and is safe to call at any time from any thread.
    unsafe { malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_malloc_trim() -> bool {
    false
}

fn main() {
    let pool = BufferPool::default(); // max_idle_bytes 256 MiB, max_idle_per_class 64
    println!(
        "{BURST} Huge buffers ({} MiB each) written in full, system allocator\n",
        PoolClass::Huge.capacity() as u64 / MIB
    );
    report("start", &pool);

    for round in 1..=2 {
        let bufs = burst(&pool);
        report(&format!("round {round}: {BURST} Huge buffers held"), &pool);
        drop(bufs);
        report(
            &format!("round {round}: dropped (256 MiB cap: the rest freed)"),
            &pool,
        );
        let freed = pool.trim();
        report(
            &format!("round {round}: trim() freed {} MiB", freed / MIB),
            &pool,
        );
    }

    // Round 3: the same, but the newest buffer stays alive. With glibc, round 2 onwards takes
    // 10 MiB slabs from the heap (the dynamic mmap threshold rose when round 1 freed its
    // mmapped slabs), and a live block at the top of the heap keeps the free space below it
    // resident after trim(), until malloc_trim() returns it.
    let mut bufs = burst(&pool);
    let newest = bufs.pop();
    drop(bufs);
    let freed = pool.trim();
    report(
        &format!("round 3: newest kept, trim() freed {} MiB", freed / MIB),
        &pool,
    );
    if glibc_malloc_trim() {
        report("round 3: glibc malloc_trim(0)", &pool);
    }
    drop(newest);
    pool.trim();
    report("round 3: newest dropped, trim()", &pool);

    println!(
        "
What to expect of RSS with the system allocator:
- A slab the pool keeps idle stays resident: it was written, and the pool only forgets its
  length. Idle memory is bounded by max_idle_bytes (default 256 MiB) and max_idle_per_class
  (default 64), and shown as idle_bytes; trim() hands all of it back to the allocator.
- Whether the allocator hands it back to the OS is its decision. glibc serves requests of at
  least M_MMAP_THRESHOLD (128 KiB by default) with their own mmap and munmaps them on free, so
  Large and Huge slabs leave RSS as soon as they are freed (by trim(), or on a drop that finds
  the idle caps full). Small (4 KiB) and Medium (64 KiB) slabs come from the heap and return
  to the OS only when the top of the heap is free (M_TRIM_THRESHOLD) or malloc_trim() runs.
- glibc's threshold is dynamic: freeing an mmapped block raises M_MMAP_THRESHOLD to its size
  (up to 32 MiB on 64-bit), so after the first Huge slab is freed, later 10 MiB slabs may come
  from the heap instead of mmap, and freeing them returns memory to the OS only when it
  coalesces at the top of the heap or malloc_trim() runs: one live buffer above them pins
  them all (round 3 above: 10 MiB live, 0 idle, yet the burst stays resident after trim()
  until malloc_trim(0); the pool has done its part). Setting M_MMAP_THRESHOLD explicitly
  (mallopt, or MALLOC_MMAP_THRESHOLD_=131072 in the environment) turns the dynamic
  adjustment off and keeps the mmap behaviour.
- Oversize buffers (above 10 MiB) are never pooled: their memory goes back on drop.
- jemalloc and mimalloc return freed memory on their own schedules (decay timers); RSS then
  falls some time after trim(), not at once."
    );
}
