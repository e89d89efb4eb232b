//! Hostile input: sizes at and past every boundary, misuse of `BufMut`, readers that lie or
//! snoop, counters pushed to `u64::MAX`, and tenant ids built to hurt. Every test states the
//! exact figures it expects, not just "no crash".
//!
//! The binary has a pass-through `#[global_allocator]` that counts the bytes each thread
//! holds, so the million-ids test can show that memory stays bounded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use axon_buffer::{
    BufferPool, BufferPoolSnapshot, PoolClass, PoolError, MAX_TENANT_ID_LEN, OVERFLOW_TENANT_ID,
};
use bytes::BufMut;

mod common;
use common::{assert_nothing_live, panic_message};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const GIB: usize = 1024 * MIB;
const SECRET: u8 = 0x5A;

// ---------------------------------------------------------------------------------------
// A pass-through allocator that keeps, per thread, the bytes allocated minus the bytes freed.

struct ThreadCounting;

thread_local! {
    static NET_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    let _ = NET_BYTES.try_with(|net| net.set(net.get() + delta));
}

fn net_bytes_on_this_thread() -> i64 {
    NET_BYTES.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counting only touches a
// const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: forwarded unchanged; `ptr` came from this allocator (hence `System`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: ThreadCounting = ThreadCounting;

// ---------------------------------------------------------------------------------------
// Helpers

/// `after` must equal `before` in every figure except `too_large_total`, which grew by `by`.
#[track_caller]
fn assert_only_too_large_moved(before: &BufferPoolSnapshot, after: &BufferPoolSnapshot, by: u64) {
    let mut expected = before.clone();
    expected.too_large_total += by;
    assert_eq!(&expected, after);
}

/// The `PoolError` inside an `io::Error` made by the crate.
fn pool_error(err: &io::Error) -> PoolError {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<PoolError>())
        .unwrap_or_else(|| panic!("not a PoolError: {err:?}"))
        .clone()
}

/// Leaves one Small and one Medium slab full of `SECRET` idle in `pool`, written by tenant
/// `"alice"`; returns their addresses so a test can check it got the same memory back.
fn plant_secrets(pool: &BufferPool) -> (usize, usize) {
    let alice = pool.tenant("alice");
    let mut small = alice.acquire(PoolClass::Small.capacity());
    let mut medium = alice.acquire(PoolClass::Medium.capacity());
    // extend_from_slice (a memcpy) rather than resize (a loop): much faster under Miri.
    small.extend_from_slice(&vec![SECRET; small.capacity()]);
    medium.extend_from_slice(&vec![SECRET; medium.capacity()]);
    let addrs = (small.as_ptr() as usize, medium.as_ptr() as usize);
    drop((small, medium));
    addrs
}

/// The class boundaries of the seed's table, -1 / 0 / +1, with the class each must get.
fn boundaries() -> Vec<(usize, PoolClass)> {
    use PoolClass::*;
    vec![
        (0, Small),
        (1, Small),
        (4 * KIB - 1, Small),
        (4 * KIB, Small),
        (4 * KIB + 1, Medium),
        (64 * KIB - 1, Medium),
        (64 * KIB, Medium),
        (64 * KIB + 1, Large),
        (MIB - 1, Large),
        (MIB, Large),
        (MIB + 1, Huge),
        (10 * MIB - 1, Huge),
        (10 * MIB, Huge),
        (10 * MIB + 1, Oversize),
    ]
}

// ---------------------------------------------------------------------------------------
// Sizes

#[test]
fn every_class_boundary_gets_its_class_and_exactly_one_hit_miss_or_oversize() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("sizes");
    for (n, class) in boundaries() {
        let before = pool.snapshot();
        let buf = tenant.try_acquire(n).unwrap();
        assert_eq!(PoolClass::for_size(n), class, "for_size({n})");
        assert_eq!(buf.class(), class, "class of acquire({n})");
        let capacity = if class == PoolClass::Oversize {
            n
        } else {
            class.capacity()
        };
        assert_eq!(buf.capacity(), capacity, "capacity of acquire({n})");
        assert!(buf.is_empty());
        let snap = pool.snapshot();
        assert_eq!(snap.live_bytes, capacity as u64);
        assert_eq!(snap.tenant_live_bytes["sizes"], capacity as u64);
        assert_eq!(snap.outstanding_buffers[&class], 1);
        assert_eq!(snap.acquisitions_total(), before.acquisitions_total() + 1);
        match class {
            PoolClass::Oversize => assert_eq!(
                snap.oversize_allocations_total,
                before.oversize_allocations_total + 1
            ),
            // The previous boundary of the same class dropped its slab: this one is a hit.
            _ if before.idle_slabs[&class] == 1 => {
                assert_eq!(snap.pool_hits[&class], before.pool_hits[&class] + 1);
                assert_eq!(snap.idle_slabs[&class], 0);
            }
            _ => assert_eq!(snap.pool_misses[&class], before.pool_misses[&class] + 1),
        }
        drop(buf);
        let snap = pool.snapshot();
        assert_nothing_live(&snap);
    }
    let snap = pool.snapshot();
    for class in PoolClass::non_oversize() {
        assert_eq!(snap.pool_misses[&class], 1, "{class}");
        assert_eq!(snap.idle_slabs[&class], 1, "{class}");
    }
    assert_eq!(snap.pool_hits[&PoolClass::Small], 3);
    assert_eq!(snap.oversize_allocations_total, 1);
    assert_eq!(snap.discarded_total[&PoolClass::Oversize], 1);
    assert_eq!(snap.too_large_total, 0);
}

#[test]
fn sizes_past_the_default_maximum_are_too_large_and_move_nothing_else() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("greedy");
    // Warm the pool so that "nothing changed" covers non-zero idle and hit figures too.
    drop(tenant.acquire(10));
    let held = tenant.acquire(100_000);
    for n in [
        GIB + 1,
        isize::MAX as usize,
        isize::MAX as usize + 1,
        usize::MAX,
    ] {
        let before = pool.snapshot();
        let err = pool.try_acquire(n).unwrap_err();
        assert_eq!(
            err,
            PoolError::TooLarge {
                requested: n as u64,
                max: GIB as u64
            }
        );
        assert_only_too_large_moved(&before, &pool.snapshot(), 1);

        let before = pool.snapshot();
        let err = tenant.try_acquire(n).unwrap_err();
        assert!(matches!(err, PoolError::TooLarge { requested, .. } if requested == n as u64));
        assert_only_too_large_moved(&before, &pool.snapshot(), 1);
    }
    assert_eq!(tenant.live_bytes(), PoolClass::Large.capacity() as u64);
    drop(held);
    assert_nothing_live(&pool.snapshot());
}

#[test]
#[cfg_attr(miri, ignore)] // a 1 GiB allocation is real memory under Miri
fn exactly_one_gib_is_allowed_by_default() {
    let pool = BufferPool::default();
    // 1 GiB of address space; never touched, so it costs no memory.
    let buf = pool.try_acquire(GIB).unwrap();
    assert_eq!(buf.class(), PoolClass::Oversize);
    assert_eq!(buf.capacity(), GIB);
    assert_eq!(pool.snapshot().live_bytes, GIB as u64);
    drop(buf);
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn too_large_wins_over_a_hard_limit_and_counts_no_refusal() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("capped");
    tenant.set_hard_limit(Some(1));
    let before = pool.snapshot();
    let err = tenant.try_acquire(usize::MAX).unwrap_err();
    assert!(matches!(err, PoolError::TooLarge { .. }), "{err:?}");
    assert_only_too_large_moved(&before, &pool.snapshot(), 1);
    assert_eq!(pool.snapshot().hard_limit_refusals_total["capped"], 0);
}

#[test]
fn configurable_max_request_bytes_bounds_acquire_and_growth() {
    let pool = BufferPool::builder().max_request_bytes(5000).build();
    let buf = pool.try_acquire(5000).unwrap();
    assert_eq!(buf.class(), PoolClass::Medium);
    drop(buf);

    let before = pool.snapshot();
    assert_eq!(
        pool.try_acquire(5001).unwrap_err(),
        PoolError::TooLarge {
            requested: 5001,
            max: 5000
        }
    );
    assert_only_too_large_moved(&before, &pool.snapshot(), 1);

    // Growth: to exactly the maximum is fine, one byte more is refused and changes nothing.
    let mut buf = pool.acquire(10);
    buf.extend_from_slice(&[1; 4000]);
    buf.try_reserve(1000).unwrap();
    assert_eq!(buf.class(), PoolClass::Medium);
    buf.resize(5000, 2);
    let before = pool.snapshot();
    assert_eq!(
        buf.try_reserve(1).unwrap_err(),
        PoolError::TooLarge {
            requested: 5001,
            max: 5000
        }
    );
    assert_eq!(buf.len(), 5000);
    assert_eq!(buf.remaining_mut(), 0);
    assert_eq!(
        buf.chunk_mut().len(),
        0,
        "nothing may be lent past the maximum"
    );
    let err = buf.write(b"x").unwrap_err();
    assert_eq!(
        pool_error(&err),
        PoolError::TooLarge {
            requested: 5001,
            max: 5000
        }
    );
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert_only_too_large_moved(&before, &pool.snapshot(), 2);
    assert_eq!(buf.len(), 5000);
}

#[test]
fn a_zero_max_request_allows_only_empty_buffers() {
    let pool = BufferPool::builder().max_request_bytes(0).build();
    let mut buf = pool.try_acquire(0).unwrap();
    assert_eq!(buf.class(), PoolClass::Small);
    assert_eq!(buf.remaining_mut(), 0);
    assert_eq!(buf.chunk_mut().len(), 0);
    assert!(matches!(
        buf.try_reserve(1),
        Err(PoolError::TooLarge {
            requested: 1,
            max: 0
        })
    ));
    assert!(buf.write(b"x").is_err());
    assert!(buf.is_empty());
    assert!(matches!(
        pool.try_acquire(1),
        Err(PoolError::TooLarge { .. })
    ));
}

#[test]
fn read_from_stops_at_max_request_bytes() {
    // The slab (4 KiB) is larger than the maximum (1000): the maximum still bounds the length,
    // as it does for try_reserve, write, put_slice and chunk_mut.
    let pool = BufferPool::builder().max_request_bytes(1000).build();
    let mut buf = pool.acquire(10);
    let data = [7u8; 3000];
    let result = buf.read_from(&mut &data[..], 3000);
    assert!(
        buf.len() <= 1000,
        "read_from grew the buffer to {} bytes, past max_request_bytes = 1000 (result {result:?})",
        buf.len()
    );
    let err = result.unwrap_err();
    assert!(
        matches!(pool_error(&err), PoolError::TooLarge { max: 1000, .. }),
        "{err:?}"
    );
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn extend_stops_at_max_request_bytes() {
    let pool = BufferPool::builder().max_request_bytes(1000).build();
    let mut buf = pool.acquire(10);
    // `filter` hides the length (size_hint 0), so the bytes come one at a time.
    let result = catch_unwind(AssertUnwindSafe(|| {
        buf.extend([7u8; 3000].iter().filter(|_| true));
    }));
    assert!(
        buf.len() <= 1000,
        "Extend grew the buffer to {} bytes, past max_request_bytes = 1000",
        buf.len()
    );
    assert!(result.is_err(), "Extend past the maximum must panic");
}

#[test]
#[cfg_attr(miri, ignore)] // Miri stops on an isize::MAX allocation instead of failing it
fn unlimited_max_request_isize_max_reaches_the_allocator_and_fails_cleanly() {
    let pool = BufferPool::builder().max_request_bytes(usize::MAX).build();
    let before = pool.snapshot();
    let err = pool.try_acquire(isize::MAX as usize).unwrap_err();
    assert_eq!(
        err,
        PoolError::AllocFailed {
            class: PoolClass::Oversize,
            bytes: isize::MAX as usize
        }
    );
    let mut expected = before.clone();
    expected.alloc_failures_total += 1;
    assert_eq!(expected, pool.snapshot());
}

#[test]
fn unlimited_max_request_sizes_past_isize_max_are_too_large() {
    // No allocation of more than isize::MAX bytes can exist (Layout refuses it): that is size
    // arithmetic that overflows, which DESIGN.md makes TooLarge, not an allocator failure.
    let pool = BufferPool::builder().max_request_bytes(usize::MAX).build();
    for n in [isize::MAX as usize + 1, usize::MAX] {
        let before = pool.snapshot();
        let err = pool.try_acquire(n).unwrap_err();
        assert!(
            matches!(err, PoolError::TooLarge { requested, .. } if requested == n as u64),
            "try_acquire({n}) with max_request_bytes = usize::MAX: {err:?}"
        );
        assert_only_too_large_moved(&before, &pool.snapshot(), 1);
    }
}

// ---------------------------------------------------------------------------------------
// The infallible forms panic with a message naming the fallible one.

#[test]
#[should_panic(expected = "BufferPool::try_acquire")]
fn pool_acquire_too_large_panics_naming_try_acquire() {
    let _ = BufferPool::default().acquire(usize::MAX);
}

#[test]
#[should_panic(expected = "Tenant::try_acquire")]
fn tenant_acquire_too_large_panics_naming_try_acquire() {
    let _ = BufferPool::default().tenant("t").acquire(GIB + 1);
}

#[test]
#[should_panic(expected = "Tenant::try_acquire")]
fn tenant_acquire_past_hard_limit_panics_naming_try_acquire() {
    let tenant = BufferPool::default().tenant("t");
    tenant.set_hard_limit(Some(4095));
    let _ = tenant.acquire(1);
}

#[test]
#[should_panic(expected = "Tenant::try_reserve")]
fn tenant_reserve_past_hard_limit_panics_naming_try_reserve() {
    let tenant = BufferPool::default().tenant("t");
    tenant.set_hard_limit(Some(100));
    let _ = tenant.reserve(101);
}

#[test]
#[should_panic(expected = "Tenant::try_reserve")]
fn tenant_reserve_that_would_wrap_panics_naming_try_reserve() {
    let tenant = BufferPool::default().tenant("t");
    let _first = tenant.reserve(u64::MAX);
    let _ = tenant.reserve(1);
}

#[test]
#[should_panic(expected = "PooledBuf::try_reserve")]
fn buf_reserve_usize_max_panics_naming_try_reserve() {
    let mut buf = BufferPool::default().acquire(1);
    buf.extend_from_slice(b"x");
    buf.reserve(usize::MAX);
}

#[test]
#[should_panic(expected = "PooledBuf::try_reserve")]
fn extend_from_slice_past_max_panics_naming_try_reserve() {
    let pool = BufferPool::builder().max_request_bytes(4096).build();
    let mut buf = pool.acquire(1);
    buf.extend_from_slice(&[0; 4097]);
}

#[test]
#[should_panic(expected = "PooledBuf::try_reserve")]
fn resize_past_max_panics_naming_try_reserve() {
    let mut buf = BufferPool::default().acquire(1);
    buf.resize(GIB + 1, 0);
}

// ---------------------------------------------------------------------------------------
// BufMut misuse

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn advance_mut_past_the_chunk_panics_and_leaves_the_length() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(10);
    buf.extend_from_slice(b"0123456789");
    let lent = buf.chunk_mut().len();
    assert_eq!(lent, 4096 - 10);
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: this breaks `advance_mut`'s contract on purpose (`lent + 1` bytes were not
        // initialised; the chunk is only `lent` long). The crate asserts `cnt` against the
        // chunk before it touches the length, which is what this test checks: the assert
        // fires, so no uninitialised byte ever becomes part of the buffer.
        unsafe { buf.advance_mut(lent + 1) };
    }));
    let payload = result.unwrap_err();
    let msg = panic_message(&*payload);
    assert!(msg.contains("advance_mut"), "panic message: {msg:?}");
    assert_eq!(buf.len(), 10);
    assert_eq!(&buf[..], b"0123456789");
    assert_eq!(buf.capacity(), 4096);
    assert_eq!(pool.snapshot().live_bytes, 4096);
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn advance_mut_usize_max_panics_without_wrapping_the_length() {
    let mut buf = BufferPool::default().acquire(1);
    buf.extend_from_slice(b"abc");
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: breaks the contract on purpose, as in the test above; the crate's assert
        // runs before `len + cnt` is computed, so nothing wraps.
        unsafe { buf.advance_mut(usize::MAX) };
    }));
    assert!(result.is_err());
    assert_eq!(&buf[..], b"abc");
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn put_slice_past_remaining_mut_panics_naming_try_reserve_and_changes_nothing() {
    let pool = BufferPool::builder().max_request_bytes(8192).build();
    let tenant = pool.tenant("writer");
    let mut buf = tenant.acquire(100);
    buf.put_slice(&[3; 100]);
    assert_eq!(buf.remaining_mut(), 8092);
    let before = pool.snapshot();
    let result = catch_unwind(AssertUnwindSafe(|| buf.put_slice(&[4; 8093])));
    let payload = result.unwrap_err();
    let msg = panic_message(&*payload);
    assert!(
        msg.contains("PooledBuf::try_reserve"),
        "panic message: {msg:?}"
    );
    assert_eq!(buf.len(), 100);
    assert!(buf.iter().all(|&b| b == 3));
    assert_eq!(buf.class(), PoolClass::Small);
    assert_only_too_large_moved(&before, &pool.snapshot(), 1);
    // Exactly up to remaining_mut is fine (one promotion, to Medium).
    buf.put_slice(&[5; 8092]);
    assert_eq!(buf.len(), 8192);
    assert_eq!(buf.class(), PoolClass::Medium);
    assert_eq!(buf.remaining_mut(), 0);
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn generic_put_past_remaining_mut_panics_and_changes_nothing() {
    let pool = BufferPool::builder().max_request_bytes(4096).build();
    let mut buf = pool.acquire(1);
    buf.put_slice(b"ab");
    let src = bytes::Bytes::from_static(&[9; 4095]);
    let result = catch_unwind(AssertUnwindSafe(|| buf.put(src)));
    assert!(result.is_err());
    assert_eq!(&buf[..], b"ab");
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn chunk_mut_on_a_full_buffer_panics_naming_try_reserve_when_the_hard_limit_refuses() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("capped");
    tenant.set_hard_limit(Some(4096));
    let mut buf = tenant.acquire(4096);
    buf.put_bytes(1, 4096);
    let before = pool.snapshot();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = buf.chunk_mut();
    }));
    let payload = result.unwrap_err();
    let msg = panic_message(&*payload);
    assert!(
        msg.contains("PooledBuf::try_reserve"),
        "panic message: {msg:?}"
    );
    assert_eq!(buf.len(), 4096);
    assert_eq!(buf.class(), PoolClass::Small);
    let mut expected = before.clone();
    *expected
        .hard_limit_refusals_total
        .get_mut("capped")
        .unwrap() += 1;
    assert_eq!(expected, pool.snapshot());
    drop(buf);
    assert_nothing_live(&pool.snapshot());
}

#[test]
#[should_panic(expected = "try_reserve")]
fn chunk_mut_refused_by_the_hard_limit_should_panic() {
    let tenant = BufferPool::default().tenant("capped");
    tenant.set_hard_limit(Some(4096));
    let mut buf = tenant.acquire(1);
    buf.put_bytes(0, 4096);
    let _ = buf.chunk_mut();
}

#[test]
fn io_write_refused_returns_an_error_and_writes_nothing() {
    let pool = BufferPool::builder().max_request_bytes(8192).build();
    let tenant = pool.tenant("capped");
    tenant.set_hard_limit(Some(4096));
    let mut buf = tenant.acquire(1);
    buf.write_all(b"hello").unwrap();
    let before = pool.snapshot();
    let err = buf.write(&[0; 5000]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert_eq!(
        pool_error(&err),
        PoolError::TenantHardLimit {
            tenant: "capped".into(),
            requested: 60 * 1024,
            live: 4096,
            limit: 4096,
            needed: 64 * 1024,
        }
    );
    assert_eq!(&buf[..], b"hello");
    let mut expected = before.clone();
    *expected
        .hard_limit_refusals_total
        .get_mut("capped")
        .unwrap() += 1;
    assert_eq!(expected, pool.snapshot());
    // write_all passes the same error up; it never panics either.
    assert!(buf.write_all(&[0; 5000]).is_err());
    assert_eq!(&buf[..], b"hello");
    // Past max_request_bytes: TooLarge, same shape.
    let err = buf.write(&[0; 9000]).unwrap_err();
    assert_eq!(
        pool_error(&err),
        PoolError::TooLarge {
            requested: 9005,
            max: 8192
        }
    );
    assert_eq!(&buf[..], b"hello");
}

// ---------------------------------------------------------------------------------------
// Hostile readers

/// Records what it is lent, writes nothing, and claims to have filled it all.
#[derive(Default)]
struct Snoop {
    lent: Vec<usize>,
    nonzero_seen: usize,
}

impl Read for Snoop {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.nonzero_seen += buf.iter().filter(|&&b| b != 0).count();
        self.lent.push(buf.len());
        Ok(buf.len())
    }
}

#[test]
fn a_reader_that_reads_its_buffer_sees_only_zeros() {
    // No decay thread: its tick freezes the thread caches for a moment, and an acquire
    // meanwhile takes a fresh slab instead of alice's (tests/stale_data.rs says more).
    let pool = BufferPool::builder().idle_decay_thread(false).build();
    let (small_addr, medium_addr) = plant_secrets(&pool);
    let mut buf = pool.tenant("bob").acquire(10);
    assert_eq!(
        buf.as_ptr() as usize,
        small_addr,
        "bob must reuse alice's slab"
    );

    let mut snoop = Snoop::default();
    // 4096 bytes fill the Small slab; a 1-byte probe shows the reader has more, which
    // promotes into alice's Medium slab; 99 more follow.
    assert_eq!(buf.read_from(&mut snoop, 4196).unwrap(), 4196);
    assert_eq!(snoop.lent, [4096, 1, 99]);
    assert_eq!(snoop.nonzero_seen, 0, "the reader saw stale bytes");
    assert_eq!(buf.class(), PoolClass::Medium);
    assert_eq!(buf.as_ptr() as usize, medium_addr);
    assert_eq!(buf.len(), 4196);
    assert!(buf.iter().all(|&b| b == 0), "the buffer shows stale bytes");
    assert_eq!(buf.capacity(), 64 * 1024);
}

/// Reads `first` bytes of `b'r'` honestly once, then claims `lie(lent)` bytes.
struct Liar {
    first: usize,
    calls: usize,
    lie: fn(usize) -> usize,
}

impl Read for Liar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls == 1 && self.first > 0 {
            buf[..self.first].fill(b'r');
            return Ok(self.first);
        }
        buf.fill(b'!');
        Ok((self.lie)(buf.len()))
    }
}

#[test]
fn a_reader_reporting_more_than_it_was_lent_is_invalid_data() {
    let lies: [fn(usize) -> usize; 3] = [|n| n + 1, |n| n * 2, |_| usize::MAX];
    for lie in lies {
        let pool = BufferPool::default();
        plant_secrets(&pool);
        let mut buf = pool.tenant("bob").acquire(10);
        buf.extend_from_slice(b"kept");
        let err = buf
            .read_from(
                &mut Liar {
                    first: 0,
                    calls: 0,
                    lie,
                },
                100,
            )
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(&buf[..], b"kept", "len and contents unchanged");
        // What was written past the length is not reachable through any safe API.
        buf.resize(4096, 0);
        assert!(buf[4..].iter().all(|&b| b == 0));
    }
}

#[test]
fn a_reader_that_lies_after_an_honest_read_keeps_only_the_honest_bytes() {
    let pool = BufferPool::default();
    plant_secrets(&pool);
    let mut buf = pool.tenant("bob").acquire(10);
    let mut liar = Liar {
        first: 10,
        calls: 0,
        lie: |n| n + 1,
    };
    let err = buf.read_from(&mut liar, 100).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(liar.calls, 2);
    assert_eq!(&buf[..], &[b'r'; 10]);
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn a_reader_that_panics_leaves_the_length_unchanged() {
    struct Bomb;
    impl Read for Bomb {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            panic!("reader exploded");
        }
    }
    let pool = BufferPool::default();
    let mut buf = pool.acquire(10);
    buf.extend_from_slice(b"kept");
    let result = catch_unwind(AssertUnwindSafe(|| buf.read_from(&mut Bomb, 100)));
    assert!(result.is_err());
    assert_eq!(
        buf.len(),
        4,
        "a panicking reader left {} unread zero bytes in the buffer",
        buf.len() - 4
    );
}

#[test]
fn a_reader_that_fails_leaves_the_length_unchanged() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone"))
        }
    }
    let mut buf = BufferPool::default().acquire(10);
    buf.extend_from_slice(b"kept");
    let err = buf.read_from(&mut Broken, 100).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(&buf[..], b"kept");
}

// ---------------------------------------------------------------------------------------
// Counters at the edge

#[test]
fn reserving_u64_max_twice_is_refused_and_nothing_wraps() {
    let pool = BufferPool::default();
    let alpha = pool.tenant("alpha");
    let beta = pool.tenant("beta");
    let cap = i64::MAX as u64; // reservations stop at 2^63 - 1 in all, so no sum can wrap

    // u64::MAX, twice: refused both times, nothing charged.
    for _ in 0..2 {
        let before = pool.snapshot();
        let err = alpha.try_reserve(u64::MAX).unwrap_err();
        assert_eq!(
            err,
            PoolError::TooLarge {
                requested: u64::MAX,
                max: cap
            }
        );
        assert_only_too_large_moved(&before, &pool.snapshot(), 1);
        assert_eq!(alpha.live_bytes(), 0);
    }

    let first = alpha.try_reserve(cap).unwrap();
    let before = pool.snapshot();
    assert_eq!(before.live_bytes, cap);
    assert_eq!(before.reserved_bytes, cap);
    // The tenant's own counter would wrap: refused.
    assert!(matches!(
        alpha.try_reserve(u64::MAX),
        Err(PoolError::TooLarge { max: u64::MAX, .. })
    ));
    // Another tenant fits its own counter but not the pool's cap: refused, undone.
    assert!(matches!(
        beta.try_reserve(1),
        Err(PoolError::TooLarge { .. })
    ));
    assert_eq!(beta.live_bytes(), 0);
    assert_only_too_large_moved(&before, &pool.snapshot(), 2);
    // A buffer still fits: buffers are bounded by memory, so cap + buffers cannot wrap.
    let buf = beta.acquire(1);
    assert_eq!(pool.snapshot().live_bytes, cap + 4096);
    drop(buf);

    drop(first);
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.tenant_live_bytes["alpha"], 0);
    assert_eq!(snap.tenant_live_bytes["beta"], 0);
}

#[test]
fn a_hard_limit_of_u64_max_reads_back() {
    let tenant = BufferPool::default().tenant("t");
    tenant.set_hard_limit(Some(u64::MAX));
    assert_eq!(tenant.hard_limit(), Some(u64::MAX));
    tenant.set_hard_limit(Some(0));
    assert_eq!(tenant.hard_limit(), Some(0));
    assert!(matches!(
        tenant.try_acquire(0),
        Err(PoolError::TenantHardLimit { limit: 0, .. })
    ));
    assert_eq!(
        tenant.try_reserve(0).unwrap().bytes(),
        0,
        "equal is allowed"
    );
}

// ---------------------------------------------------------------------------------------
// Tenant ids

#[test]
fn odd_tenant_ids_are_tracked_exactly_as_given() {
    let lossy = String::from_utf8_lossy(&[0xff, b'a', 0xc3, 0x28, 0xf0, 0x9f, 0x92]).into_owned();
    assert!(lossy.contains('\u{FFFD}'));
    let ids = [
        String::new(),
        "\0".to_owned(),
        "nul\0inside".to_owned(),
        "line\nbreak".to_owned(),
        "\r\n".to_owned(),
        "\"quoted\"".to_owned(),
        "back\\slash".to_owned(),
        "{tenant_id=\"x\"} 1".to_owned(),
        lossy,
        "é".repeat(MAX_TENANT_ID_LEN / 2), // exactly the maximum, in bytes
        "a".repeat(MAX_TENANT_ID_LEN),
    ];
    let pool = BufferPool::default();
    let mut held = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let tenant = pool.tenant(id);
        assert_eq!(tenant.id(), id);
        assert!(!tenant.is_overflow(), "{id:?}");
        for _ in 0..=i {
            let buf = tenant.acquire(1);
            assert_eq!(buf.tenant(), Some(id.as_str()));
            held.push(buf);
        }
    }
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_live_bytes.len(), ids.len());
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(snap.tenant_live_bytes[id], 4096 * (i as u64 + 1), "{id:?}");
        assert_eq!(snap.tenant_outstanding_buffers[id], i as u64 + 1, "{id:?}");
    }
    assert!(!snap.tenant_live_bytes.contains_key(OVERFLOW_TENANT_ID));
    drop(held);
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn long_ids_go_to_the_overflow_tenant() {
    let pool = BufferPool::default();
    let ten_kb = "x".repeat(10 * 1000);
    let ten_kb_lossy = String::from_utf8_lossy(&[0xffu8; 10 * 1000]).into_owned();
    let just_over = "€".repeat(MAX_TENANT_ID_LEN / 3 + 1); // 258 bytes, 86 chars
    assert!(just_over.len() > MAX_TENANT_ID_LEN && just_over.chars().count() < MAX_TENANT_ID_LEN);
    let mut held = Vec::new();
    for id in [
        &ten_kb,
        &ten_kb_lossy,
        &just_over,
        &"b".repeat(MAX_TENANT_ID_LEN + 1),
    ] {
        let tenant = pool.tenant(id);
        assert!(tenant.is_overflow(), "{} bytes", id.len());
        assert_eq!(tenant.id(), OVERFLOW_TENANT_ID);
        let buf = tenant.acquire(1);
        assert_eq!(buf.tenant(), Some(OVERFLOW_TENANT_ID));
        held.push(buf);
    }
    // The reserved id itself is the overflow tenant, as documented.
    let reserved = pool.tenant(OVERFLOW_TENANT_ID);
    assert!(reserved.is_overflow());
    held.push(reserved.acquire(1));

    let snap = pool.snapshot();
    assert_eq!(
        snap.tenant_live_bytes.len(),
        1,
        "{:?}",
        snap.tenant_live_bytes.keys()
    );
    assert_eq!(snap.tenant_live_bytes[OVERFLOW_TENANT_ID], 5 * 4096);
    assert_eq!(snap.tenant_outstanding_buffers[OVERFLOW_TENANT_ID], 5);
    assert_eq!(reserved.live_bytes(), 5 * 4096);
    drop(held);
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn a_million_distinct_ids_keep_series_and_memory_bounded() {
    let (ids, max_tenants, check_every) = if cfg!(miri) {
        (400, 16, 100)
    } else {
        (1_000_000, 1000, 50_000)
    };
    let pool = BufferPool::builder().max_tenants(max_tenants).build();
    let mut baseline = None;
    let mut overflowed = 0;
    for i in 0..ids {
        let tenant = pool.tenant(&format!("hostile-{i:07}"));
        overflowed += usize::from(tenant.is_overflow());
        if i % 7 == 0 {
            let mut buf = tenant.acquire(i % 5000);
            buf.extend_from_slice(b"payload");
        }
        if i % 13 == 0 {
            drop(tenant.reserve(i as u64));
        }
        drop(tenant);
        if (i + 1) % check_every == 0 {
            let snap = pool.snapshot();
            for (name, len) in [
                ("tenant_live_bytes", snap.tenant_live_bytes.len()),
                (
                    "tenant_soft_limit_exceeded_total",
                    snap.tenant_soft_limit_exceeded_total.len(),
                ),
                (
                    "hard_limit_refusals_total",
                    snap.hard_limit_refusals_total.len(),
                ),
                (
                    "tenant_outstanding_buffers",
                    snap.tenant_outstanding_buffers.len(),
                ),
            ] {
                assert!(len <= max_tenants + 1, "{name}: {len} series after {i} ids");
            }
            assert_nothing_live(&snap);
            drop(snap);
            // Memory held by this thread (the registry is filled on the caller's thread) is
            // flat once the registry has filled and been swept a few times.
            let net = net_bytes_on_this_thread();
            match baseline {
                None if i + 1 >= 2 * check_every => baseline = Some(net),
                None => {}
                Some(base) => assert!(
                    net - base < 256 * 1024,
                    "{} bytes more held after {i} ids than at the baseline",
                    net - base
                ),
            }
        }
    }
    // Every departed id left no handle and no bytes, so it could always be evicted.
    assert_eq!(
        overflowed, 0,
        "ids pushed into overflow although room could be made"
    );
}

#[test]
fn departed_tenants_are_evicted_so_new_ones_get_their_own_account() {
    // A realistic bound (the throttled sweep is only visible with max_tenants >= 32).
    let max_tenants = if cfg!(miri) { 64 } else { 1000 };
    let pool = BufferPool::builder().max_tenants(max_tenants).build();
    let present: Vec<_> = (0..max_tenants)
        .map(|i| {
            let tenant = pool.tenant(&format!("present-{i}"));
            assert!(!tenant.is_overflow());
            let buf = tenant.acquire(1);
            (tenant, buf)
        })
        .collect();
    // Full, and every account is in use: a newcomer goes to overflow, as documented.
    let latecomer = pool.tenant("latecomer");
    assert!(latecomer.is_overflow());
    drop(latecomer);
    assert_eq!(pool.snapshot().tenant_live_bytes.len(), max_tenants + 1);

    // Everyone departs: no handle, no buffer, live 0.
    drop(present);
    assert_nothing_live(&pool.snapshot());

    let newcomer = pool.tenant("newcomer");
    assert!(
        !newcomer.is_overflow(),
        "every account is departed, yet a new id went to overflow"
    );
    assert_eq!(newcomer.id(), "newcomer");
    let buf = newcomer.acquire(1);
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_live_bytes["newcomer"], 4096);
    assert!(snap.tenant_live_bytes.len() <= max_tenants + 1);
    drop(buf);
}

#[test]
fn departed_tenants_are_evicted_with_a_small_bound() {
    let pool = BufferPool::builder().max_tenants(8).build();
    let present: Vec<_> = (0..8).map(|i| pool.tenant(&format!("p{i}"))).collect();
    assert!(pool.tenant("late").is_overflow());
    drop(present);
    for i in 0..100 {
        let tenant = pool.tenant(&format!("n{i}"));
        assert!(!tenant.is_overflow(), "n{i}");
        drop(tenant.acquire(1));
    }
    assert!(pool.snapshot().tenant_live_bytes.len() <= 9);
}

#[test]
fn accounts_still_charged_or_held_are_never_evicted() {
    let pool = BufferPool::builder().max_tenants(4).build();
    let held_handle = pool.tenant("handle");
    let buf = pool.tenant("buffer").acquire(1); // no handle left, but a buffer
    let reservation = pool.tenant("reservation").reserve(10); // no handle, a reservation
    pool.set_tenant_soft_limit("configured", 1); // no handle, a limit set by hand
    for i in 0..50 {
        drop(pool.tenant(&format!("churn-{i}")));
    }
    let snap = pool.snapshot();
    for id in ["handle", "buffer", "reservation", "configured"] {
        assert!(snap.tenant_live_bytes.contains_key(id), "{id} was evicted");
    }
    assert_eq!(snap.tenant_live_bytes["buffer"], 4096);
    assert_eq!(snap.tenant_live_bytes["reservation"], 10);
    assert_eq!(pool.tenant("configured").soft_limit(), 1);
    assert_eq!(held_handle.id(), "handle");
    drop((buf, reservation));
    assert_nothing_live(&pool.snapshot());
}
