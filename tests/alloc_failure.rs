//! Allocation failure: a `#[global_allocator]` that refuses, on demand and on the calling
//! thread only, every allocation of at least N bytes. Each refusal must come back as
//! `PoolError::AllocFailed` (or an `io::Error` of kind `OutOfMemory`), never abort, and
//! charge nothing: only `alloc_failures_total` moves.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use axon_buffer::{BufferPool, BufferPoolSnapshot, PoolClass, PoolError};
use bytes::BufMut;

mod common;
use common::panic_message;

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// The allocator

thread_local! {
    /// Allocations of at least this many bytes fail on this thread (`usize::MAX`: none can).
    static FAIL_AT_OR_ABOVE: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Allocations refused on this thread.
    static REFUSED: Cell<u64> = const { Cell::new(0) };
}

fn refuse(size: usize) -> bool {
    // Never while this thread panics: the panic hook (and the backtrace it may print under
    // RUST_BACKTRACE=1) allocates under std's backtrace lock, and a refusal there would make
    // the allocation-error hook wait for that same lock forever.
    if std::thread::panicking() {
        return false;
    }
    // `try_with`: the allocator may run while this thread's locals are torn down.
    let refuse = FAIL_AT_OR_ABOVE
        .try_with(|limit| size >= limit.get())
        .unwrap_or(false);
    if refuse {
        let _ = REFUSED.try_with(|n| n.set(n.get() + 1));
    }
    refuse
}

struct FailOnDemand;

// SAFETY: every allocation that is not refused is forwarded to `System` unchanged; a refusal
// returns null, which `GlobalAlloc` allows for `alloc`, `alloc_zeroed` and `realloc` (and
// `realloc` then leaves the old block untouched, as its contract requires). The thread-local
// cells are const-initialised and hold no destructor, so reading them never allocates.
unsafe impl GlobalAlloc for FailOnDemand {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && refuse(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: FailOnDemand = FailOnDemand;

/// While alive, allocations of at least `bytes` fail on this thread.
#[must_use]
struct Failing {
    refused_before: u64,
}

fn fail_at_or_above(bytes: usize) -> Failing {
    FAIL_AT_OR_ABOVE.with(|limit| limit.set(bytes));
    Failing {
        refused_before: REFUSED.with(Cell::get),
    }
}

impl Failing {
    /// Allocations refused since this guard was made.
    fn refused(&self) -> u64 {
        REFUSED.with(Cell::get) - self.refused_before
    }
}

impl Drop for Failing {
    fn drop(&mut self) {
        FAIL_AT_OR_ABOVE.with(|limit| limit.set(usize::MAX));
    }
}

/// `after` equals `before` but for `alloc_failures_total`, one more.
#[track_caller]
fn assert_only_one_failure_counted(before: &BufferPoolSnapshot, after: &BufferPoolSnapshot) {
    let mut expected = before.clone();
    expected.alloc_failures_total += 1;
    assert_eq!(&expected, after);
}

/// A pool with a tenant that counts every charge above its soft limit (0), and one slab of
/// each pooled class already idle, so "nothing changed" covers idle and hit figures.
fn warm_pool() -> BufferPool {
    let pool = BufferPool::builder().default_tenant_soft_limit(0).build();
    let tenant = pool.tenant("t");
    let warm: Vec<_> = PoolClass::non_oversize()
        .into_iter()
        .map(|class| tenant.acquire(class.capacity()))
        .collect();
    drop(warm);
    pool
}

// ---------------------------------------------------------------------------------------
// try_acquire

#[test]
fn try_acquire_of_every_class_fails_cleanly_on_a_miss() {
    let pool = BufferPool::builder().default_tenant_soft_limit(0).build();
    let tenant = pool.tenant("t");
    for (requested, class, bytes) in [
        (1, PoolClass::Small, 4096),
        (5000, PoolClass::Medium, 64 * 1024),
        (100_000, PoolClass::Large, MIB),
        (2 * MIB, PoolClass::Huge, 10 * MIB),
        (20 * MIB, PoolClass::Oversize, 20 * MIB),
    ] {
        let before = pool.snapshot();
        let failing = fail_at_or_above(bytes);
        let err = tenant.try_acquire(requested).unwrap_err();
        assert_eq!(failing.refused(), 1);
        drop(failing);
        assert_eq!(err, PoolError::AllocFailed { class, bytes });
        assert_only_one_failure_counted(&before, &pool.snapshot());
        assert_eq!(tenant.live_bytes(), 0);

        // Without a tenant, the same.
        let before = pool.snapshot();
        let failing = fail_at_or_above(bytes);
        let err = pool.try_acquire(requested).unwrap_err();
        drop(failing);
        assert_eq!(err, PoolError::AllocFailed { class, bytes });
        assert_only_one_failure_counted(&before, &pool.snapshot());
    }
    let snap = pool.snapshot();
    assert_eq!(snap.alloc_failures_total, 10);
    assert_eq!(snap.tenant_soft_limit_exceeded_total["t"], 0);
    assert_eq!(snap.acquisitions_total(), 0);
    // The allocator recovers: the pool works and counts as usual.
    let buf = tenant.acquire(1);
    assert_eq!(pool.snapshot().pool_misses[&PoolClass::Small], 1);
    assert_eq!(pool.snapshot().tenant_soft_limit_exceeded_total["t"], 1);
    drop(buf);
}

#[test]
fn a_hit_needs_no_allocation() {
    let pool = warm_pool();
    let tenant = pool.tenant("t");
    let failing = fail_at_or_above(4096);
    let bufs: Vec<_> = PoolClass::non_oversize()
        .into_iter()
        .map(|class| tenant.try_acquire(class.capacity()).unwrap())
        .collect();
    assert_eq!(failing.refused(), 0);
    drop(failing);
    let snap = pool.snapshot();
    for class in PoolClass::non_oversize() {
        assert_eq!(snap.pool_hits[&class], 1);
        assert_eq!(snap.pool_misses[&class], 1);
    }
    assert_eq!(snap.alloc_failures_total, 0);
    drop(bufs);
}

#[test]
fn a_failed_acquire_releases_its_charge_against_the_limits() {
    let pool = BufferPool::builder().max_live_bytes(8192).build();
    let tenant = pool.tenant("capped");
    tenant.set_hard_limit(Some(8192));
    let held = tenant.acquire(1);
    let failing = fail_at_or_above(4096);
    assert!(matches!(
        tenant.try_acquire(1),
        Err(PoolError::AllocFailed { .. })
    ));
    drop(failing);
    // Had the failed charge stuck, both limits would now refuse this one.
    let second = tenant.try_acquire(1).unwrap();
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 8192);
    assert_eq!(snap.hard_limit_refusals_total["capped"], 0);
    assert_eq!(snap.pool_limit_refusals_total, 0);
    drop((held, second));
    assert_eq!(pool.snapshot().live_bytes, 0);
}

#[test]
#[should_panic(expected = "Tenant::try_acquire")]
fn tenant_acquire_panics_naming_try_acquire_when_the_allocator_fails() {
    let tenant = BufferPool::default().tenant("t");
    let _failing = fail_at_or_above(4096);
    let _ = tenant.acquire(1);
}

#[test]
#[should_panic(expected = "BufferPool::try_acquire")]
fn pool_acquire_panics_naming_try_acquire_when_the_allocator_fails() {
    let pool = BufferPool::default();
    let _failing = fail_at_or_above(4096);
    let _ = pool.acquire(1);
}

// ---------------------------------------------------------------------------------------
// Promotion: try_reserve, io::Write, read_from, chunk_mut

#[test]
fn try_reserve_promotion_fails_cleanly() {
    let pool = warm_pool();
    let tenant = pool.tenant("t");
    let mut buf = tenant.acquire(1);
    buf.extend_from_slice(b"abc");
    // Empty the Medium list so the promotion has to allocate.
    let medium = tenant.acquire(5000);

    let before = pool.snapshot();
    let failing = fail_at_or_above(64 * 1024);
    let err = buf.try_reserve(5000).unwrap_err();
    drop(failing);
    assert_eq!(
        err,
        PoolError::AllocFailed {
            class: PoolClass::Medium,
            bytes: 64 * 1024
        }
    );
    assert_only_one_failure_counted(&before, &pool.snapshot());
    assert_eq!(buf.class(), PoolClass::Small);
    assert_eq!(buf.capacity(), 4096);
    assert_eq!(&buf[..], b"abc");
    assert_eq!(tenant.live_bytes(), 4096 + 64 * 1024);
    drop((buf, medium));
}

#[test]
fn promotion_to_oversize_and_oversize_growth_fail_cleanly() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("t");

    // Huge -> Oversize: a fresh 20 MiB allocation.
    let mut buf = tenant.acquire(10 * MIB);
    buf.resize(10 * MIB, 1);
    let before = pool.snapshot();
    let failing = fail_at_or_above(10 * MIB + 1);
    let err = buf.try_reserve(1).unwrap_err();
    drop(failing);
    assert_eq!(
        err,
        PoolError::AllocFailed {
            class: PoolClass::Oversize,
            bytes: 20 * MIB
        }
    );
    assert_only_one_failure_counted(&before, &pool.snapshot());
    assert_eq!((buf.class(), buf.len()), (PoolClass::Huge, 10 * MIB));
    drop(buf);

    // Oversize -> larger Oversize: a realloc.
    let mut buf = tenant.acquire(11 * MIB);
    buf.resize(11 * MIB, 2);
    let before = pool.snapshot();
    let failing = fail_at_or_above(11 * MIB + 1);
    let err = buf.try_reserve(1).unwrap_err();
    assert_eq!(failing.refused(), 1);
    drop(failing);
    assert_eq!(
        err,
        PoolError::AllocFailed {
            class: PoolClass::Oversize,
            bytes: 22 * MIB
        }
    );
    assert_only_one_failure_counted(&before, &pool.snapshot());
    assert_eq!(buf.capacity(), 11 * MIB);
    assert_eq!(buf.len(), 11 * MIB);
    assert!(buf.iter().all(|&b| b == 2));
    assert_eq!(tenant.live_bytes(), 11 * MIB as u64);
    drop(buf);
    assert_eq!(pool.snapshot().live_bytes, 0);
}

#[test]
fn io_write_returns_out_of_memory_and_writes_nothing() {
    let pool = warm_pool();
    let tenant = pool.tenant("t");
    let _medium = tenant.acquire(5000); // empty the Medium list
    let mut buf = tenant.acquire(1);
    buf.write_all(b"hello").unwrap();
    let before = pool.snapshot();
    let failing = fail_at_or_above(64 * 1024);
    let err = buf.write(&[0; 5000]).unwrap_err();
    drop(failing);
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<PoolError>());
    assert_eq!(
        inner,
        Some(&PoolError::AllocFailed {
            class: PoolClass::Medium,
            bytes: 64 * 1024
        })
    );
    assert_eq!(&buf[..], b"hello");
    assert_only_one_failure_counted(&before, &pool.snapshot());
}

#[test]
fn read_from_keeps_what_it_read_and_returns_out_of_memory() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(1);
    let data = vec![9u8; 5000];
    let before = pool.snapshot();
    let failing = fail_at_or_above(64 * 1024);
    let err = buf.read_from(&mut &data[..], 5000).unwrap_err();
    drop(failing);
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
    assert_eq!(buf.len(), 4096, "the first slab's worth stays");
    assert!(buf.iter().all(|&b| b == 9));
    assert_only_one_failure_counted(&before, &pool.snapshot());
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn chunk_mut_on_a_full_buffer_panics_naming_try_reserve_when_the_allocator_fails() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(1);
    buf.put_bytes(7, 4096);
    let before = pool.snapshot();
    let failing = fail_at_or_above(64 * 1024);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = buf.chunk_mut();
    }));
    drop(failing);
    let payload = result.unwrap_err();
    let msg = panic_message(&*payload);
    assert!(
        msg.contains("PooledBuf::try_reserve"),
        "panic message: {msg:?}"
    );
    assert_eq!(buf.len(), 4096);
    assert_only_one_failure_counted(&before, &pool.snapshot());
}

#[test]
#[should_panic(expected = "PooledBuf::try_reserve")]
fn reserve_panics_naming_try_reserve_when_the_allocator_fails() {
    let mut buf = BufferPool::default().acquire(1);
    let _failing = fail_at_or_above(64 * 1024);
    buf.reserve(5000);
}

#[test]
#[should_panic(expected = "PooledBuf::try_reserve")]
fn extend_from_slice_panics_naming_try_reserve_when_the_allocator_fails() {
    let mut buf = BufferPool::default().acquire(1);
    let _failing = fail_at_or_above(64 * 1024);
    buf.extend_from_slice(&[0; 5000]);
}

#[test]
fn figures_are_exact_after_many_failures() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("t");
    let rounds = if cfg!(miri) { 20 } else { 1000 };
    let mut failures = 0;
    let mut held = Vec::new();
    for i in 0..rounds {
        let failing = fail_at_or_above(if i % 3 == 0 { 4096 } else { usize::MAX });
        match tenant.try_acquire(i % 5000) {
            Ok(buf) => held.push(buf),
            Err(PoolError::AllocFailed { .. }) => failures += 1,
            Err(other) => panic!("{other:?}"),
        }
        drop(failing);
        if held.len() > 4 {
            drop(held.remove(0));
        }
    }
    drop(held);
    let snap = pool.snapshot();
    assert!(failures > 0);
    assert_eq!(snap.alloc_failures_total, failures);
    assert_eq!(snap.acquisitions_total(), rounds as u64 - failures);
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.tenant_live_bytes["t"], 0);
    assert!(snap.outstanding_buffers.values().all(|&n| n == 0));
}

// ---------------------------------------------------------------------------------------
// The return path

/// Runs the test `name` of this binary in a child process with `AXON_CHILD` set, for checks
/// whose failure mode is an abort, which would take every other test of the binary down.
fn run_in_child(name: &str) -> std::process::ExitStatus {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env("AXON_CHILD", "1")
        .status()
        .unwrap()
}

#[test]
#[cfg_attr(miri, ignore)] // spawns a process
fn a_drop_after_trim_needs_no_allocation() {
    if std::env::var_os("AXON_CHILD").is_none() {
        let status = run_in_child("a_drop_after_trim_needs_no_allocation");
        assert!(
            status.success(),
            "dropping a buffer after trim() aborted when the allocator refused: {status}"
        );
        return;
    }
    let pool = BufferPool::default();
    let bufs: Vec<_> = (0..3).map(|_| pool.acquire(1)).collect();
    drop(pool.acquire(1)); // one idle slab for trim() to free
    assert_eq!(pool.trim(), 4096);
    let failing = fail_at_or_above(1);
    // The return path: a push onto a free list. Drop must neither panic nor abort; with no
    // memory for the list it may free the slab instead (and count it as discarded).
    drop(bufs);
    drop(failing);
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(
        snap.idle_slabs[&PoolClass::Small] + snap.discarded_total[&PoolClass::Small],
        3
    );
}
