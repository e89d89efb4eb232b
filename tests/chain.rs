//! `PooledChain` and `BytesChain`: charges, the segment bound, writes (BufMut, io::Write,
//! all or nothing), freeze and the return of every segment from any thread. Small enough
//! to run under Miri (`cfg!(miri)` sizes), which covers the chain's `BufMut`.

use std::io::{IoSlice, Write};

use axon_buffer::{BufferPool, BytesChain, PoolClass, PoolError, PooledChain};
use bytes::{Buf, BufMut, Bytes};

mod common;
use common::assert_nothing_live;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A pool that keeps its figures still while a test reads them.
fn pool() -> BufferPool {
    BufferPool::builder()
        .idle_decay_thread(false)
        .idle_timeout(None)
        .build()
}

/// One way of writing a payload into a chain.
type WriteWay = fn(&mut PooledChain, &[u8]);

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn contents(chain: &BytesChain) -> Vec<u8> {
    let mut out = Vec::with_capacity(chain.len());
    for segment in chain.iter() {
        out.extend_from_slice(segment);
    }
    out
}

#[test]
fn chains_are_send_sync_static() {
    fn check<T: Send + Sync + 'static>() {}
    check::<PooledChain>();
    check::<BytesChain>();
}

/// A tenant under an 8 MiB hard limit: a contiguous buffer of 5 MiB is a 10 MiB Huge slab
/// and is refused; a chain of 5 MiB holds five Large slabs and fits.
#[test]
#[cfg_attr(miri, ignore = "MiBs of memory: covered natively")]
fn five_mib_fits_an_eight_mib_limit_as_a_chain() {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(8 * MIB as u64));
    let err = t.try_acquire(5 * MIB).unwrap_err();
    assert!(!err.waiting_helps(), "{err}");

    let mut chain = t.chain();
    chain.try_extend_from_slice(&pattern(5 * MIB)).unwrap();
    assert_eq!(chain.len(), 5 * MIB);
    assert_eq!(chain.capacity(), 5 * MIB);
    assert_eq!(chain.segments(), 5);
    assert_eq!(t.live_bytes(), 5 * MIB as u64);
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 5 * MIB as u64);
    assert_eq!(snap.oversize_allocations_total, 0);
    let frozen = chain.freeze();
    assert_eq!(contents(&frozen), pattern(5 * MIB));
    drop(frozen);
    assert_nothing_live(&pool.snapshot());
    assert_eq!(pool.snapshot().idle_slabs[&PoolClass::Large], 5);
}

/// A 64 MiB limit holds 21 chains of 3 MiB at once (three Large slabs each), where it
/// holds six contiguous buffers (a 10 MiB Huge slab each).
#[test]
#[cfg_attr(miri, ignore = "MiBs of memory: covered natively")]
fn a_64_mib_limit_holds_21_bodies_of_3_mib() {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(64 * MIB as u64));
    let body = pattern(3 * MIB);
    let mut held = Vec::new();
    loop {
        let mut chain = t.chain();
        match chain.try_extend_from_slice(&body) {
            Ok(()) => held.push(chain),
            Err(err) => {
                assert!(err.waiting_helps(), "{err}");
                assert_eq!(chain.capacity(), 0);
                break;
            }
        }
    }
    assert_eq!(held.len(), 21);
    assert!(held.len() >= 18);
    assert_eq!(t.live_bytes(), 21 * 3 * MIB as u64);
    let buffers: Vec<_> = std::iter::from_fn(|| t.try_acquire(3 * MIB).ok()).collect();
    assert!(buffers.is_empty()); // 1 MiB left: no Huge slab fits
    drop(held);
    let contiguous: Vec<_> = std::iter::from_fn(|| t.try_acquire(3 * MIB).ok()).collect();
    assert_eq!(contiguous.len(), 6);
    drop(contiguous);
    assert_nothing_live(&pool.snapshot());
}

/// The bound, however the bytes come: one write, many small ones, through `BufMut`, with a
/// reservation first or none. A payload of at most 4 KiB is one Small slab.
#[test]
fn capacity_stays_within_a_medium_slab_of_the_length() {
    let pool = pool();
    let sizes: &[usize] = if cfg!(miri) {
        &[0, 1, 4 * KIB, 4 * KIB + 1, 70 * KIB]
    } else {
        &[
            0,
            1,
            4 * KIB,
            4 * KIB + 1,
            64 * KIB,
            200 * KIB,
            MIB - 1,
            MIB + 1,
            3 * MIB,
            10 * MIB - 5,
            12 * MIB,
            41 * MIB + 3,
        ]
    };
    for &size in sizes {
        let data = pattern(size);
        let ways: [(&str, WriteWay); 4] = [
            ("one write", |c, d| c.try_extend_from_slice(d).unwrap()),
            ("reserved", |c, d| {
                c.try_reserve(d.len()).unwrap();
                c.try_extend_from_slice(d).unwrap();
            }),
            ("8 KiB writes", |c, d| {
                for piece in d.chunks(8 * KIB) {
                    c.write_all(piece).unwrap();
                }
            }),
            ("BufMut u64s", |c, d| {
                let mut d = d;
                while d.len() >= 8 {
                    c.put_u64(d.get_u64());
                }
                c.put_slice(d);
            }),
        ];
        for (way, write) in ways {
            if cfg!(miri) && way == "BufMut u64s" && size > 8 * KIB {
                continue;
            }
            let mut chain = pool.tenant("t").chain();
            write(&mut chain, &data);
            assert_eq!(chain.len(), size, "{way} {size}");
            assert!(
                chain.capacity() <= size + 64 * KIB,
                "{way} {size}: capacity {}",
                chain.capacity()
            );
            if (1..=4 * KIB).contains(&size) {
                assert_eq!(
                    (chain.capacity(), chain.segments()),
                    (4 * KIB, 1),
                    "{way} {size}"
                );
            }
            assert_eq!(pool.tenant("t").live_bytes(), chain.capacity() as u64);
            let frozen = chain.freeze();
            assert_eq!(frozen.len(), size);
            assert_eq!(contents(&frozen), data, "{way} {size}");
            drop(frozen);
            assert_nothing_live(&pool.snapshot());
        }
    }
    assert_eq!(pool.snapshot().oversize_allocations_total, 0);
}

/// Past 10 MiB the segments still come from the lists: no Oversize slab, and every
/// segment back on its list at the end.
#[test]
#[cfg_attr(miri, ignore = "MiBs of memory: covered natively")]
fn past_ten_mib_no_oversize_and_the_segments_go_back() {
    let pool = pool();
    let mut chain = pool.chain();
    chain.try_reserve(41 * MIB).unwrap();
    chain.put_bytes(3, 41 * MIB);
    assert_eq!(chain.segments(), 5); // 4 Huge, 1 Large
    assert_eq!(chain.capacity(), 41 * MIB);
    let frozen = chain.freeze();
    let snap = pool.snapshot();
    assert_eq!(snap.oversize_allocations_total, 0);
    assert_eq!(snap.live_bytes, 41 * MIB as u64);
    drop(frozen);
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.idle_slabs[&PoolClass::Huge], 4);
    assert_eq!(snap.idle_slabs[&PoolClass::Large], 1);
    assert_eq!(snap.idle_bytes, 41 * MIB as u64);
}

/// A chunked body grows by Medium segments, past the 64 idle slabs a class keeps of whole
/// buffers: the segments come back under the byte cap alone, so the next body of the
/// same size takes every segment from the pool (before: 64 kept, the rest freed and
/// allocated again, each refaulting its pages once glibc had trimmed its heap).
#[test]
fn a_chunked_chain_past_the_count_cap_comes_back_whole() {
    let segments = if cfg!(miri) { 70 } else { 192 }; // 12 MiB: more than 64 either way
    let pool = pool();
    let frame = vec![5u8; 16 * KIB];
    let body = |pool: &BufferPool| {
        let mut chain = pool.chain();
        for _ in 0..segments * 4 {
            chain.try_extend_from_slice(&frame).unwrap();
        }
        assert_eq!(chain.segments(), segments);
        chain.freeze()
    };
    drop(body(&pool));
    let first = pool.snapshot();
    assert_nothing_live(&first);
    assert_eq!(first.idle_slabs[&PoolClass::Medium], segments as u64);
    assert_eq!(first.discarded_total[&PoolClass::Medium], 0);
    drop(body(&pool));
    let second = pool.snapshot();
    assert_eq!(
        second.pool_misses[&PoolClass::Medium],
        first.pool_misses[&PoolClass::Medium]
    );
    assert_eq!(second.discarded_total[&PoolClass::Medium], 0);
    assert_eq!(second.idle_slabs[&PoolClass::Medium], segments as u64);
}

/// The byte cap still holds for segments, and whole buffers keep the count cap: a Medium
/// buffer returned while segments fill the list past the count is freed, though bytes have
/// room.
#[test]
fn segments_keep_the_byte_cap_and_buffers_the_count_cap() {
    let medium = 64 * KIB;
    let pool = BufferPool::builder()
        .idle_decay_thread(false)
        .idle_timeout(None)
        .max_idle_per_class(8)
        .max_idle_bytes(12 * medium as u64)
        .build();
    let chain_of = |segments: usize| {
        let mut chain = pool.chain();
        for _ in 0..segments {
            chain.try_extend_from_slice(&vec![1u8; medium]).unwrap();
        }
        assert_eq!(chain.segments(), segments);
        chain
    };
    let chain = chain_of(10);
    let buffer = pool.acquire(medium);
    drop(chain);
    let snap = pool.snapshot();
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], 10);
    assert_eq!(snap.discarded_total[&PoolClass::Medium], 0);
    drop(buffer); // 10 idle: past the count cap, within the byte cap
    let snap = pool.snapshot();
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], 10);
    assert_eq!(snap.discarded_total[&PoolClass::Medium], 1);
    let (first, second) = (chain_of(10), chain_of(5)); // 10 hits, 5 misses
    drop((first, second)); // 12 fit the byte cap
    let snap = pool.snapshot();
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], 12);
    assert_eq!(snap.idle_bytes, 12 * medium as u64);
    assert_eq!(snap.discarded_total[&PoolClass::Medium], 4);
    assert_nothing_live(&snap);
}

/// Writing never moves what is written: the first segment's memory is where the first
/// byte went, however much is written after it.
#[test]
fn writing_never_copies_what_is_written() {
    let pool = pool();
    let mut chain = pool.chain();
    let first = chain.chunk_mut().as_mut_ptr() as *const u8;
    chain.put_slice(b"first");
    let more = if cfg!(miri) { 20 * KIB } else { 3 * MIB };
    chain.put_bytes(9, more);
    chain.try_extend_from_slice(&pattern(more)).unwrap();
    let frozen = chain.freeze();
    assert_eq!(frozen.iter().next().unwrap().as_ptr(), first);
    assert_eq!(&frozen.chunk()[..5], b"first");
}

/// `try_extend_from_slice` and `io::Write` are all or nothing: a refused write leaves the
/// chain, the charges and the slab figures as they were.
#[test]
fn a_refused_write_changes_nothing() {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(192 * KIB as u64));
    let mut chain = t.chain();
    chain.try_extend_from_slice(&pattern(70 * KIB)).unwrap(); // Medium, Medium
    assert_eq!(chain.capacity(), 128 * KIB);
    let before = pool.snapshot();
    // 200 KiB more: two Medium slabs more than the limit.
    let err = chain
        .try_extend_from_slice(&pattern(200 * KIB))
        .unwrap_err();
    assert!(matches!(err, PoolError::TenantHardLimit { .. }), "{err:?}");
    assert!(!err.waiting_helps(), "the whole chain can never fit: {err}");
    let err = chain.write(&pattern(200 * KIB)).unwrap_err();
    assert!(err.to_string().contains("hard limit"), "{err}");
    assert_eq!((chain.len(), chain.capacity()), (70 * KIB, 128 * KIB));
    let after = pool.snapshot();
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.idle_slabs, before.idle_slabs);
    assert_eq!(after.pool_hits, before.pool_hits);
    assert_eq!(after.pool_misses, before.pool_misses);
    assert_eq!(after.hard_limit_refusals_total["t"], 2);

    // Held by someone else, the same step fits later: waiting helps.
    let other = t.acquire(64 * KIB);
    let err = chain.try_extend_from_slice(&pattern(60 * KIB)).unwrap_err();
    assert!(err.waiting_helps(), "{err}");
    drop(other);
    chain.try_extend_from_slice(&pattern(60 * KIB)).unwrap();
    assert_eq!(chain.capacity(), 192 * KIB);
    drop(chain);
    assert_nothing_live(&pool.snapshot());
}

/// A chain of one Small slab at a 4 KiB hard limit: full, so its next write needs a segment
/// the limit refuses.
fn full_chain_at_its_limit() -> (BufferPool, PooledChain) {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(4 * KIB as u64));
    let mut chain = t.chain();
    chain.put_slice(&[1; 4 * KIB]);
    (pool, chain)
}

/// The infallible writes panic naming the `try_*` form (`#[should_panic]`, not
/// `catch_unwind`, so the test also runs under `panic=abort`).
#[test]
#[should_panic(expected = "PooledChain::try_extend_from_slice")]
fn put_slice_past_the_limit_panics_naming_try_extend_from_slice() {
    let (_pool, mut chain) = full_chain_at_its_limit();
    chain.put_slice(b"one more");
}

#[test]
#[should_panic(expected = "PooledChain::try_reserve")]
fn chunk_mut_past_the_limit_panics_naming_try_reserve() {
    let (_pool, mut chain) = full_chain_at_its_limit();
    let _ = chain.chunk_mut(); // full: takes a segment
}

#[test]
#[should_panic(expected = "past the")]
fn advance_mut_past_the_chunk_panics() {
    let pool = pool();
    let mut chain = pool.chain();
    chain.put_u8(1);
    // SAFETY: never reached past the assert: 5000 is more than the Small slab lends.
    unsafe { chain.advance_mut(5000) };
}

/// `chunk_mut` and `advance_mut` by hand, across a segment boundary (the unsafe code).
#[test]
fn buf_mut_by_hand_across_segments() {
    let pool = pool();
    let mut chain = pool.chain();
    let mut written = 0u8;
    while chain.len() < 4 * KIB + 100 {
        let chunk = chain.chunk_mut();
        let n = chunk.len().min(37);
        for i in 0..n {
            chunk.write_byte(i, written.wrapping_add(i as u8));
        }
        // SAFETY: the first `n` bytes of the chunk were written just above.
        unsafe { chain.advance_mut(n) };
        written = written.wrapping_add(n as u8);
    }
    assert_eq!(chain.segments(), 2);
    let len = chain.len();
    let mut frozen = chain.freeze();
    assert_eq!(frozen.segments(), 2);
    assert_eq!(frozen.chunk().len(), 4 * KIB);
    let all = frozen.copy_to_bytes(len);
    assert_eq!(all.len(), len);
    assert!(all.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert!(frozen.is_empty());
}

/// `BytesChain` as a `Buf`: one `IoSlice` a segment, advance across segments, slices of a
/// segment without a copy, `to_bytes` copying only past one segment.
#[test]
fn bytes_chain_reads_as_a_buf() {
    let pool = pool();
    let mut chain = pool.chain();
    let data = pattern(4 * KIB + 70 * KIB); // Small, Medium, Medium
    chain.try_extend_from_slice(&data[..4 * KIB]).unwrap();
    chain.try_extend_from_slice(&data[4 * KIB..]).unwrap();
    assert_eq!(chain.segments(), 3);
    let frozen = chain.freeze();
    assert_eq!(frozen.segments(), 3);

    let mut slices = [IoSlice::new(&[]); 8];
    assert_eq!(frozen.chunks_vectored(&mut slices), 3);
    let lens: Vec<usize> = slices[..3].iter().map(|s| s.len()).collect();
    assert_eq!(lens, [4 * KIB, 64 * KIB, 6 * KIB]);
    let mut sink = Vec::new();
    let mut sent = 0;
    while sent < frozen.len() {
        let mut rest = frozen.clone();
        rest.advance(sent);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = rest.chunks_vectored(&mut slices);
        sent += sink.write_vectored(&slices[..n]).unwrap();
    }
    assert_eq!(sink, data);

    let whole = frozen.to_bytes(); // three segments: one copy
    assert_eq!(&whole[..], &data[..]);
    let first = frozen.iter().next().unwrap().as_ptr();
    assert_ne!(whole.as_ptr(), first);

    let mut reader = frozen.clone();
    let head = reader.copy_to_bytes(100);
    assert_eq!(head.as_ptr(), first); // within a segment: a slice, no copy
    reader.advance(4 * KIB - 100 + 10);
    assert_eq!(reader.segments(), 2);
    assert_eq!(reader.chunk().as_ptr(), unsafe_free_offset(&frozen, 1, 10));
    let single = {
        let mut last = frozen.clone();
        last.advance(4 * KIB + 64 * KIB);
        last.to_bytes() // one segment left: no copy
    };
    assert_eq!(single.as_ptr(), frozen.iter().nth(2).unwrap().as_ptr());
    assert_eq!(
        format!("{frozen:?}"),
        "BytesChain { len: 75776, segments: 3, .. }"
    );
    drop((frozen, reader, head, whole));
    assert_eq!(pool.snapshot().live_bytes, 64 * KIB as u64); // `single` pins its segment
    drop(single);
    assert_nothing_live(&pool.snapshot());
}

/// The address `offset` bytes into segment `index`.
fn unsafe_free_offset(chain: &BytesChain, index: usize, offset: usize) -> *const u8 {
    chain.iter().nth(index).unwrap()[offset..].as_ptr()
}

/// Every segment and its charge return when the last clone of its `Bytes` drops, on
/// whatever thread: clones and slices dropped on other threads leave every figure at 0.
#[test]
fn segments_return_from_any_thread() {
    let pool = pool();
    let t = pool.tenant("t");
    let mut chain = t.chain();
    let size = if cfg!(miri) { 70 * KIB } else { 3 * MIB + 100 };
    chain.try_extend_from_slice(&pattern(size)).unwrap();
    let charged = chain.capacity() as u64;
    let frozen = chain.freeze();
    let slices: Vec<Bytes> = frozen.iter().map(|b| b.slice(..1)).collect();
    std::thread::scope(|s| {
        let clone = frozen.clone();
        s.spawn(move || drop(clone));
        for slice in slices {
            s.spawn(move || drop(slice));
        }
        s.spawn(|| assert_eq!(t.live_bytes(), charged));
    });
    assert_eq!(t.live_bytes(), charged); // `frozen` still holds them
    std::thread::spawn(move || drop(frozen)).join().unwrap();
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.tenant_live_bytes["t"], 0);
}

/// An empty chain charges nothing; dropping a chain returns what it reserved; freeze
/// returns the segments never written at once.
#[test]
fn empty_and_unwritten_segments_charge_nothing() {
    let pool = pool();
    let t = pool.tenant("t");
    let chain = t.chain();
    assert_eq!((chain.len(), chain.capacity(), chain.segments()), (0, 0, 0));
    assert_eq!(chain.tenant(), Some("t"));
    assert_eq!(pool.chain().tenant(), None);
    assert_eq!(t.live_bytes(), 0);
    assert!(chain.freeze().is_empty());

    let mut chain = t.chain();
    chain.try_reserve(100 * KIB).unwrap(); // two Medium slabs
    chain.put_slice(b"x");
    assert_eq!(t.live_bytes(), 128 * KIB as u64);
    let frozen = chain.freeze();
    assert_eq!(frozen.segments(), 1);
    assert_eq!(t.live_bytes(), 64 * KIB as u64);
    drop(frozen);
    let mut chain = t.chain();
    chain.try_reserve(10 * KIB).unwrap();
    assert_eq!(
        format!("{chain:?}"),
        "PooledChain { len: 0, capacity: 65536, segments: 1, tenant: Some(\"t\"), .. }"
    );
    drop(chain);
    assert_nothing_live(&pool.snapshot());
}

/// `max_request_bytes` bounds a chain as it bounds a buffer: `TooLarge`, nothing kept.
#[test]
fn a_chain_past_max_request_bytes_is_too_large() {
    let pool = BufferPool::builder()
        .max_request_bytes(100 * KIB)
        .idle_decay_thread(false)
        .build();
    let mut chain = pool.chain();
    chain.try_extend_from_slice(&[1; 60 * KIB]).unwrap();
    let err = chain.try_reserve(50 * KIB).unwrap_err();
    assert!(matches!(err, PoolError::TooLarge { .. }), "{err:?}");
    assert_eq!(chain.remaining_mut(), 40 * KIB);
    let err = chain.try_reserve(usize::MAX).unwrap_err();
    assert!(matches!(err, PoolError::TooLarge { .. }), "{err:?}");
    assert_eq!(chain.capacity(), 64 * KIB);
    drop(chain);
    let mut empty = pool.chain();
    assert!(empty.try_reserve(200 * KIB).is_err());
    assert_eq!(empty.capacity(), 0);
    assert_nothing_live(&pool.snapshot());
}

/// A chain, or a frozen one dropped unread, gives its segments back last to first, so the
/// next chain of a thread takes the same slabs in the same order (the free lists are
/// LIFO): `benches/README.md` measured a chunked 12 MiB body (192 Medium segments) at
/// 1.04-1.07x `BytesMut`'s time this way, against 1.09-1.10x when they went back first to
/// last. Whether the chain drops as it is or frozen.
#[test]
fn the_next_chain_takes_the_same_slabs_in_the_same_order() {
    let pool = pool();
    let t = pool.tenant("t");
    let payload = pattern(4 * 64 * KIB); // four Medium segments
    let addresses = |chain: &BytesChain| -> Vec<usize> {
        chain
            .iter()
            .map(|segment| segment.as_ptr() as usize)
            .collect()
    };
    let filled = || {
        let mut chain = t.chain();
        chain.try_extend_from_slice(&payload).unwrap();
        chain
    };
    let first = filled().freeze();
    let order = addresses(&first);
    assert_eq!(order.len(), 4);
    drop(first); // frozen
    let second = filled().freeze();
    assert_eq!(addresses(&second), order);
    drop(second);
    drop(filled()); // as it is
    let fourth = filled().freeze();
    assert_eq!(addresses(&fourth), order);
    assert_eq!(contents(&fourth), payload);
    drop(fourth);
    assert_nothing_live(&pool.snapshot());
}
