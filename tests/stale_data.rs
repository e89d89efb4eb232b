//! Stale data: a slab one tenant filled with a secret and another tenant got back.
//!
//! Every test plants `SECRET` bytes through one write path as tenant "alice", drops the
//! buffer, re-acquires the *same* slab (pointer asserted) as tenant "bob", and then:
//! - without `zero_on_release`: no safe API of bob's buffer shows a `SECRET` byte, although
//!   the raw memory still holds them (read through `chunk_mut`'s pointer, to show why the
//!   knob exists);
//! - with `zero_on_release(true)`: the raw memory itself is zero before bob touches it.

use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use axon_buffer::{BufferPool, PoolClass, PooledBuf};
use bytes::BufMut;

/// Never written by the tests as anything but the secret.
const SECRET: u8 = 0xA5;

/// One way alice can put `SECRET` into her buffer (and maybe leave it in other states).
/// Returns how many leading bytes of the slab she initialised with it.
type Plant = fn(PooledBuf) -> usize;

/// Every write path of the public API, each planting the secret differently.
fn plants() -> Vec<(&'static str, Plant)> {
    vec![
        ("resize", |mut b| {
            let n = b.capacity();
            b.resize(n, SECRET);
            n
        }),
        ("extend_from_slice", |mut b| {
            let n = b.capacity();
            b.extend_from_slice(&vec![SECRET; n]);
            n
        }),
        ("io::Write", |mut b| {
            let n = b.capacity();
            b.write_all(&vec![SECRET; n]).unwrap();
            n
        }),
        ("put_slice", |mut b| {
            let n = b.capacity();
            b.put_slice(&vec![SECRET; n]);
            n
        }),
        ("put_bytes", |mut b| {
            let n = b.capacity();
            b.put_bytes(SECRET, n);
            n
        }),
        ("chunk_mut written fully, advanced by half", |mut b| {
            let chunk = b.chunk_mut();
            let n = chunk.len();
            chunk.copy_from_slice(&vec![SECRET; n]);
            // SAFETY: the first n/2 bytes of the chunk were initialised just above.
            unsafe { b.advance_mut(n / 2) };
            n
        }),
        ("read_from", |mut b| {
            let n = b.capacity();
            let data = vec![SECRET; n];
            assert_eq!(b.read_from(&mut &data[..], n).unwrap(), n);
            n
        }),
        ("DerefMut", |mut b| {
            let n = b.capacity();
            b.resize(n, 0);
            b.fill(SECRET);
            n
        }),
        ("Extend<&u8> with an exact size", |mut b| {
            let n = b.capacity();
            b.extend(vec![SECRET; n].iter());
            n
        }),
        ("truncate after writing", |mut b| {
            let n = b.capacity();
            b.resize(n, SECRET);
            b.truncate(1);
            b.clear();
            n
        }),
        ("freeze, clone, slice", |mut b| {
            let n = b.capacity();
            b.resize(n, SECRET);
            let bytes = b.freeze();
            let clone = bytes.clone();
            let slice = clone.slice(10..20);
            drop((bytes, clone));
            assert_eq!(&slice[..], &[SECRET; 10]);
            n
        }),
        ("promotion to the next class", |mut b| {
            let n = b.capacity();
            b.resize(n, SECRET);
            b.extend_from_slice(&[SECRET; 100]);
            assert_ne!(b.capacity(), n);
            n
        }),
        ("into Bytes via From", |mut b| {
            let n = b.capacity();
            b.resize(n, SECRET);
            drop(bytes::Bytes::from(b));
            n
        }),
    ]
}

/// The first `n` bytes of the allocation behind an empty buffer, read raw through the
/// pointer `chunk_mut` lends.
///
/// # Safety
///
/// Those `n` bytes of this very allocation must have been initialised (by an earlier user).
unsafe fn raw_head(buf: &mut PooledBuf, n: usize) -> Vec<u8> {
    assert!(buf.is_empty());
    let chunk = buf.chunk_mut();
    assert!(chunk.len() >= n);
    let ptr = chunk.as_mut_ptr();
    // SAFETY: 1. `ptr..ptr + n` lies inside the chunk (asserted above), which lies inside the
    // slab's allocation. 2. The caller guarantees those bytes were initialised; the pool
    // never de-initialises memory (releasing a slab only moves a `Vec`'s length, and
    // `zero_on_release` overwrites with zeros), so reading them as `u8` is defined.
    // 3. Nothing else accesses the buffer while the slice lives: it is copied out at once.
    unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec()
}

/// Every read path of bob's buffer, none of which may show a `SECRET` byte. Consumes it.
#[track_caller]
fn assert_no_secret_visible(mut buf: PooledBuf) {
    let cap = buf.capacity();
    assert!(buf.is_empty());
    assert_eq!(&buf[..], b"");

    // resize fills what it adds.
    buf.resize(cap / 2, 1);
    assert!(buf.iter().all(|&b| b == 1));
    buf.truncate(0);

    // A chunk written partially, then advanced by exactly what was written.
    let chunk = buf.chunk_mut();
    assert!(chunk.len() >= 3);
    chunk[..3].copy_from_slice(b"bob");
    // SAFETY: the first 3 bytes of the chunk were initialised just above.
    unsafe { buf.advance_mut(3) };
    assert_eq!(&buf[..], b"bob");

    // A reader that writes nothing yet reports everything read sees, and leaves, zeros.
    struct Lazy(usize);
    impl Read for Lazy {
        fn read(&mut self, lent: &mut [u8]) -> io::Result<usize> {
            self.0 += lent.iter().filter(|&&b| b == SECRET).count();
            Ok(lent.len())
        }
    }
    let mut lazy = Lazy(0);
    buf.read_from(&mut lazy, 100).unwrap();
    assert_eq!(lazy.0, 0, "read_from lent stale bytes to the reader");
    assert_eq!(&buf[..3], b"bob");
    assert!(buf[3..].iter().all(|&b| b == 0));

    buf.write_all(b" writes").unwrap();
    assert_eq!(buf.len(), 110);
    assert_eq!(&buf[103..], b" writes");

    // Everything up to the capacity, then freeze.
    buf.resize(cap, 0);
    assert!(
        !buf.contains(&SECRET),
        "a SECRET byte is visible through Deref"
    );
    assert!(!format!("{buf:?}").contains(&SECRET.to_string()));
    let frozen = buf.freeze();
    assert_eq!(frozen.len(), cap);
    assert!(!frozen.contains(&SECRET));
}

/// A pool without the decay thread. Each test here needs bob to get alice's slab back, and
/// the thread's tick freezes the thread caches for a moment: an acquire meanwhile cannot
/// reach its own cache and takes a fresh slab (a miss, by design; nobody waits). Under
/// valgrind, which runs one thread at a time, a tick once landed between alice's drop and
/// bob's acquire.
fn pool(zero_on_release: bool) -> BufferPool {
    BufferPool::builder()
        .zero_on_release(zero_on_release)
        .idle_decay_thread(false)
        .build()
}

/// Alice plants the secret in a slab of `class`; bob gets the same slab back.
fn alice_then_bob(pool: &BufferPool, class: PoolClass, plant: Plant) -> (PooledBuf, usize) {
    let alice = pool.tenant("alice");
    let buf = alice.acquire(class.capacity());
    let addr = buf.as_ptr() as usize;
    let planted = plant(buf);
    assert_eq!(alice.live_bytes(), 0);
    let bob = pool.tenant("bob").acquire(class.capacity());
    assert_eq!(
        bob.as_ptr() as usize,
        addr,
        "bob must get alice's slab back"
    );
    assert_eq!(bob.tenant(), Some("bob"));
    (bob, planted)
}

/// The classes every write path is tried in. Huge (10 MiB per check, byte by byte in a debug
/// build, under Valgrind or Miri) has its own test with fewer paths.
fn classes() -> Vec<PoolClass> {
    if cfg!(miri) {
        vec![PoolClass::Small]
    } else {
        vec![PoolClass::Small, PoolClass::Medium, PoolClass::Large]
    }
}

#[test]
fn no_safe_api_shows_another_tenants_bytes() {
    for class in classes() {
        for (path, plant) in plants() {
            let pool = pool(false);
            let (mut bob, planted) = alice_then_bob(&pool, class, plant);
            // SAFETY: alice initialised the first `planted` bytes of this allocation (`plant`
            // wrote them and `alice_then_bob` asserted bob has the same allocation).
            let raw = unsafe { raw_head(&mut bob, planted) };
            // Without zero_on_release the pool does not scrub (documented, default off):
            // the secret is still in memory, which is why no safe API may show it.
            assert!(
                raw.iter().all(|&b| b == SECRET),
                "{class} {path}: expected the raw slab to still hold the secret"
            );
            assert_no_secret_visible(bob);
            assert_eq!(pool.snapshot().live_bytes, 0);
        }
    }
}

#[test]
fn zero_on_release_scrubs_the_raw_slab_before_reuse() {
    for class in classes() {
        for (path, plant) in plants() {
            let pool = pool(true);
            let (mut bob, planted) = alice_then_bob(&pool, class, plant);
            // SAFETY: as above: alice initialised the first `planted` bytes of this allocation;
            // zeroing them rewrites them, it does not de-initialise them.
            let raw = unsafe { raw_head(&mut bob, planted) };
            let stale = raw.iter().filter(|&&b| b != 0).count();
            assert_eq!(
                stale, 0,
                "{class} {path}: {stale} of {planted} bytes not zeroed on release"
            );
            assert_no_secret_visible(bob);
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)] // 10 MiB compared byte by byte
fn huge_slabs_too() {
    let some = [
        "resize",
        "chunk_mut written fully, advanced by half",
        "promotion to the next class",
    ];
    for zero in [false, true] {
        for (path, plant) in plants().into_iter().filter(|(p, _)| some.contains(p)) {
            let pool = pool(zero);
            let (mut bob, planted) = alice_then_bob(&pool, PoolClass::Huge, plant);
            // SAFETY: alice initialised the first `planted` bytes of this allocation.
            let raw = unsafe { raw_head(&mut bob, planted) };
            let expected = if zero { 0 } else { SECRET };
            assert!(
                raw.iter().all(|&b| b == expected),
                "huge {path}, zero_on_release {zero}"
            );
            assert_no_secret_visible(bob);
        }
    }
}

#[test]
fn promotion_into_a_secret_slab_shows_only_the_copied_bytes() {
    let pool = pool(false);
    let alice = pool.tenant("alice");
    let mut medium = alice.acquire(PoolClass::Medium.capacity());
    medium.extend_from_slice(&vec![SECRET; medium.capacity()]);
    let medium_addr = medium.as_ptr() as usize;
    drop(medium);

    let mut bob = pool.tenant("bob").acquire(1);
    bob.extend_from_slice(&[7; 4096]);
    bob.extend_from_slice(b"!"); // promotes into alice's Medium slab
    assert_eq!(bob.class(), PoolClass::Medium);
    assert_eq!(bob.as_ptr() as usize, medium_addr);
    assert_eq!(bob.len(), 4097);
    assert!(!bob.contains(&SECRET));
    bob.resize(bob.capacity(), 0);
    assert!(!bob.contains(&SECRET));
}

#[test]
fn extend_with_an_unknown_length_is_scrubbed_when_it_promotes() {
    // Extend<u8> from an iterator that hides its length pushes byte by byte and promotes when
    // the slab is full: the Small slab it leaves behind held the secret.
    let pool = pool(true);
    let alice = pool.tenant("alice");
    let mut buf = alice.acquire(1);
    let small_addr = buf.as_ptr() as usize;
    buf.extend(std::iter::repeat_n(SECRET, 5000).filter(|_| true));
    assert_eq!(buf.class(), PoolClass::Medium);
    drop(buf);

    let mut bob = pool.tenant("bob").acquire(1);
    assert_eq!(bob.as_ptr() as usize, small_addr);
    // SAFETY: alice's Extend pushed 4096 initialised bytes into this allocation before it
    // promoted.
    let raw = unsafe { raw_head(&mut bob, 4096) };
    let stale = raw.iter().filter(|&&b| b == SECRET).count();
    assert_eq!(stale, 0, "{stale} secret bytes survived zero_on_release");
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn extend_from_an_iterator_that_panics_is_scrubbed() {
    let pool = pool(true);
    let mut buf = pool.tenant("alice").acquire(1);
    let addr = buf.as_ptr() as usize;
    let mut n = 0;
    let result = catch_unwind(AssertUnwindSafe(|| {
        buf.extend(std::iter::from_fn(|| {
            n += 1;
            assert!(n <= 1000, "the source failed");
            Some(SECRET)
        }));
    }));
    assert!(result.is_err());
    assert_eq!(buf.len(), 1000, "what was pushed before the panic stays");
    drop(buf);

    let mut bob = pool.tenant("bob").acquire(1);
    assert_eq!(bob.as_ptr() as usize, addr);
    // SAFETY: alice's Extend pushed 1000 initialised bytes into this allocation.
    let raw = unsafe { raw_head(&mut bob, 1000) };
    let stale = raw.iter().filter(|&&b| b == SECRET).count();
    assert_eq!(stale, 0, "{stale} secret bytes survived zero_on_release");
}

#[test]
fn a_lent_chunk_counts_as_exposed_even_if_never_advanced() {
    // A writer may fill a chunk and then fail before advance_mut: those bytes are in the
    // slab, so zero_on_release must scrub them too.
    let pool = pool(true);
    let mut buf = pool.tenant("alice").acquire(1);
    let addr = buf.as_ptr() as usize;
    let chunk = buf.chunk_mut();
    let n = chunk.len();
    chunk.copy_from_slice(&vec![SECRET; n]);
    assert!(buf.is_empty());
    drop(buf);

    let mut bob = pool.tenant("bob").acquire(1);
    assert_eq!(bob.as_ptr() as usize, addr);
    // SAFETY: alice initialised all `n` bytes of the chunk, the whole slab.
    let raw = unsafe { raw_head(&mut bob, n) };
    assert!(raw.iter().all(|&b| b == 0));
}

#[test]
fn into_vec_takes_the_slab_away_and_the_pool_never_sees_it_again() {
    let pool = pool(true);
    let mut buf = pool.tenant("alice").acquire(1);
    buf.extend_from_slice(&[SECRET; 100]);
    let vec = buf.into_vec();
    assert_eq!(vec, [SECRET; 100]);
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 0);
    let bob = pool.tenant("bob").acquire(1);
    assert_ne!(bob.as_ptr(), vec.as_ptr());
    assert_eq!(pool.snapshot().pool_misses[&PoolClass::Small], 2);
}
