//! glibc keeps free memory that lies below a live block in its heap. Small slabs (4 KiB)
//! are freed to it as they are, so a burst of them, freed under one live buffer, stays
//! resident unless the pool asks glibc to give it back: `trim()` does, and so does the
//! decay thread after a pass that freed anything (`BufferPoolBuilder::trim_allocator`,
//! on by default).
//!
//! One test in this file: resident memory is the process's, and tests of one binary run
//! side by side.
#![cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]

use std::time::{Duration, Instant};

use axon_buffer::{BufferPool, PooledBuf};

const MIB: u64 = 1024 * 1024;
/// Bytes of Small slabs in a burst.
const BURST: u64 = 64 * MIB;
/// How far above its value before the burst RSS may stay.
const TOLERANCE: u64 = 16 * MIB;

/// Resident set size, from `/proc/self/status`.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// A burst of Small buffers written in full, all dropped but the newest, which is
/// returned: it sits above the others in the heap.
fn burst_under_a_live_buffer(pool: &BufferPool) -> PooledBuf {
    let mut bufs: Vec<PooledBuf> = (0..BURST / 4096)
        .map(|i| {
            let mut buf = pool.acquire(4096);
            buf.resize(4096, i as u8 | 1);
            buf
        })
        .collect();
    let kept = bufs.pop().unwrap();
    drop(bufs);
    kept
}

#[test]
fn small_slabs_freed_below_a_live_buffer_leave_the_process() {
    // trim(): at once.
    let pool = BufferPool::builder().idle_decay_thread(false).build();
    let before = rss();
    let kept = burst_under_a_live_buffer(&pool);
    let held = rss();
    assert!(
        held >= before + BURST * 3 / 4,
        "the burst is resident: {held} bytes against {before} before"
    );
    pool.trim();
    let after = rss();
    assert!(
        after <= before + TOLERANCE,
        "trim(): {} MiB resident after, {} MiB before the burst",
        after / MIB,
        before / MIB
    );
    drop(kept);

    // The decay thread: no call at all.
    let pool = BufferPool::builder()
        .idle_timeout(Some(Duration::from_millis(50)))
        .build();
    let before = rss();
    let kept = burst_under_a_live_buffer(&pool);
    assert!(rss() >= before + BURST * 3 / 4);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rss() > before + TOLERANCE && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = rss();
    assert!(
        after <= before + TOLERANCE,
        "the decay: {} MiB resident after, {} MiB before the burst",
        after / MIB,
        before / MIB
    );
    assert!(pool.snapshot().decayed_slabs_total.values().sum::<u64>() > 0);
    drop(kept);
}
