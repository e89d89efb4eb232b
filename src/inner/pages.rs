//! Giving memory back to the system, not only to the allocator: the pages of slabs the
//! pool frees (trim, the idle decay, a return the caps refuse).

use crate::PoolClass;

/// Gives freed slabs back to the allocator, and their pages to the system first: slabs of
/// 64 KiB and more get `madvise(MADV_DONTNEED)` on their page-aligned interior, so the
/// memory leaves the process's RSS even when glibc keeps the block in its heap (once its
/// dynamic mmap threshold has risen past the slab, or a live block sits above it). The
/// allocator's own bookkeeping lies outside the interior. Measured on this crate's machine
/// (`examples/rss.rs`, round 3: 40 Huge slabs freed under one live 10 MiB buffer): 402 MiB
/// stayed resident with a plain free, 12 MiB with this.
pub(crate) fn release(slabs: Vec<Vec<u8>>) {
    for mut slab in slabs {
        if slab.capacity() >= PoolClass::Medium.capacity() {
            give_pages_back(&mut slab);
        }
        drop(slab);
    }
}

/// Frees a slab a buffer gave back that the pool cannot keep (the caps are full, or it is
/// Oversize), outside any section. A Large or Huge slab the caps refused gives its pages
/// back first, as glibc's own `munmap` would have done before its mmap threshold rose:
/// the pool had a unit's worth of such slabs idle already. Smaller slabs, and Oversize
/// buffers, go to the allocator as they are: a drop stays cheap, and an Oversize block
/// the allocator keeps is reused by the next one without page faults (measured with
/// `scripts/load.sh`: giving the pages of every 12 MiB upload back cost 29% more CPU per
/// request, the faults of the next upload).
pub(crate) fn discard(slab: Option<Vec<u8>>) {
    let Some(mut slab) = slab else { return };
    let pooled = PoolClass::Large.capacity()..=PoolClass::Huge.capacity();
    if pooled.contains(&slab.capacity()) {
        give_pages_back(&mut slab);
    }
    drop(slab);
}

#[cfg(all(target_os = "linux", not(miri)))]
fn give_pages_back(slab: &mut Vec<u8>) {
    const PAGE: usize = 4096; // the smallest page Linux has; larger ones are multiples
    let start = slab.as_mut_ptr();
    let offset = start.align_offset(PAGE);
    let Some(len) = slab.capacity().checked_sub(offset) else {
        return;
    };
    let len = len / PAGE * PAGE;
    if len == 0 {
        return;
    }
    // `[start + offset, start + offset + len)` lies inside the slab's allocation, which
    // this `Vec` owns and is about to free; nothing reads its bytes meanwhile (the slab is
    // empty). MADV_DONTNEED only drops the pages: a later access (the allocator reusing
    // the block) finds them zero-filled, which any fresh allocation may be.
    // SAFETY: so the call touches only memory this slab owns, and leaves it valid; an
    // error (say, EINVAL) changes nothing.
    unsafe {
        libc::madvise(start.add(offset).cast(), len, libc::MADV_DONTNEED);
    }
}

#[cfg(not(all(target_os = "linux", not(miri))))]
fn give_pages_back(_slab: &mut Vec<u8>) {}

/// Asks glibc to give the free memory of every heap back to the system
/// (`malloc_trim(0)`), after a decay or a trim freed slabs. `release`'s madvise covers the
/// interiors of slabs of 64 KiB and more as they are freed; what it cannot reach is free
/// memory glibc keeps below a live block: Small slabs (freed as they are, on every path),
/// and whatever else the process freed meanwhile. Measured here (`scripts/load.sh`'s
/// chain server 30 s after its load, every slab decayed): 22.5 MiB resident, 12.8 MiB
/// after this call. It takes each heap's lock in turn while it walks that heap's free
/// chunks, which is why only the decay thread and the user's `trim` calls make it, never a
/// request's path.
#[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
pub(crate) fn trim_allocator() {
    // Its result (whether it gave back anything) is not needed.
    // SAFETY: `malloc_trim` has no precondition: it locks each of glibc's arenas itself and
    // gives back only pages of free chunks, so it is sound from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Elsewhere the allocator is not glibc's (or Miri runs the code): nothing to ask.
#[cfg(not(all(target_os = "linux", target_env = "gnu", not(miri))))]
pub(crate) fn trim_allocator() {}
