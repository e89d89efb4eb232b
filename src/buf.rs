//! [`PooledBuf`]: a slab on loan from a pool, returned by `Drop`.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes};
use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::num::NonZeroU64;
use std::ops::{Deref, DerefMut};

use crate::inner::{AccountPtr, Caps, Charged, PoolRef, Purpose};
use crate::{PoolClass, PoolError};

/// A byte buffer on loan from a [`BufferPool`](crate::BufferPool): write into it, read it
/// through `Deref<Target = [u8]>`, freeze it into [`Bytes`], and drop it. Dropping the last
/// owner returns the slab to its class's free list and debits the tenant.
///
/// A new buffer is empty (`len() == 0`) with the capacity of its class. It derefs to exactly
/// the bytes written so far, never to uninitialised memory or to an earlier user's data.
/// Writing past its capacity *promotes* it: it takes a slab of the class that fits, copies
/// the bytes over and returns the old slab; past 10 MiB it becomes
/// [`Oversize`](PoolClass::Oversize) and grows by doubling, so writing N bytes costs O(N).
///
/// `PooledBuf` is `Send + Sync + 'static`: it may be moved to and dropped on any thread.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use axon_buffer::{BufferPool, PoolClass};
///
/// let pool = BufferPool::default();
/// let mut buf = pool.tenant("acme").acquire(1024);
/// assert_eq!(buf.class(), PoolClass::Small);
/// buf.extend_from_slice(b"frame header ");
/// write!(buf, "{}", 42)?;
/// assert_eq!(&buf[..], b"frame header 42");
///
/// let frozen = buf.freeze(); // no copy
/// let header = frozen.slice(0..5);
/// drop(frozen);
/// assert_eq!(&header[..], b"frame");
/// assert_eq!(pool.snapshot().tenant_live_bytes["acme"], 4096); // the slice pins the slab
/// drop(header);
/// assert_eq!(pool.snapshot().live_bytes, 0);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "dropping a PooledBuf returns its slab at once"]
pub struct PooledBuf {
    /// `len()` is the written length; its capacity is the class's (or the Oversize size).
    /// Taken out exactly once: by `into_vec` (which sets `charged` to 0) or by `Drop`.
    slab: ManuallyDrop<Vec<u8>>,
    class: PoolClass,
    /// Bytes charged to the pool and the tenant, debited exactly on drop.
    charged: u64,
    /// High-water mark of bytes that may hold user data, for `zero_on_release`.
    exposed: usize,
    /// The tenant charged: no reference count, the charge keeps the account alive.
    tenant: Option<AccountPtr>,
    pool: PoolRef,
    /// The leak tracker's record of this buffer, when it was sampled.
    tracked: Option<NonZeroU64>,
    /// The idle caps its slab returns under: both for a buffer, the byte cap alone for a
    /// chain's segment.
    caps: Caps,
}

impl PooledBuf {
    /// The one way a buffer comes to be: refuse oversized requests, charge, then take the
    /// slab, undoing the charge if the allocator refuses.
    #[inline(always)]
    pub(crate) fn try_new(
        pool: PoolRef,
        tenant: Option<AccountPtr>,
        requested: usize,
    ) -> Result<PooledBuf, PoolError> {
        let (class, capacity) = Self::sized(&pool, requested)?;
        let (slab, charged) = pool.obtain(tenant, class, capacity)?;
        Ok(Self::assemble(pool, tenant, class, slab, charged))
    }

    /// [`Self::try_new`], waiting for room while a limit refuses and waiting can help.
    pub(crate) async fn new_wait(
        pool: PoolRef,
        tenant: Option<AccountPtr>,
        requested: usize,
    ) -> Result<PooledBuf, PoolError> {
        let (class, capacity) = Self::sized(&pool, requested)?;
        let (slab, charged) = match pool.obtain_fast(tenant, class, capacity) {
            Some(slab) => (slab, Charged::FROM_STOCK),
            None => pool.obtain_wait(tenant, class, capacity).await?,
        };
        Ok(Self::assemble(pool, tenant, class, slab, charged))
    }

    /// The class and capacity of a buffer for `requested` bytes, or `TooLarge`.
    #[inline(always)]
    fn sized(pool: &PoolRef, requested: usize) -> Result<(PoolClass, usize), PoolError> {
        let requested = pool.check_request(Some(requested))?;
        let class = PoolClass::for_size(requested);
        let capacity = match class {
            PoolClass::Oversize => requested,
            class => class.capacity(),
        };
        Ok((class, capacity))
    }

    /// The buffer around a slab just taken for a charge just made (also a chain's next
    /// segment, charged and taken by `chain.rs`).
    #[inline(always)]
    pub(crate) fn assemble(
        pool: PoolRef,
        tenant: Option<AccountPtr>,
        class: PoolClass,
        slab: Vec<u8>,
        charged: Charged,
    ) -> PooledBuf {
        charged.count_soft(tenant);
        let capacity = slab.capacity();
        let tracked = match &pool.leaks {
            None => None,
            // SAFETY: the buffer's charge, just made, keeps the account alive.
            Some(leaks) => leaks.sample(class, capacity, tenant.map(|a| unsafe { a.get() }.id())),
        };
        PooledBuf {
            slab: ManuallyDrop::new(slab),
            class,
            charged: capacity as u64,
            exposed: 0,
            tenant,
            pool,
            tracked,
            caps: Caps::Both,
        }
    }

    /// A chain's segment: its slab returns under the byte cap alone (`Caps` says why).
    #[inline]
    pub(crate) fn into_segment(mut self) -> PooledBuf {
        self.caps = Caps::Bytes;
        self
    }

    /// The pool and the account this buffer is charged through; its charge keeps the
    /// account valid for as long as the buffer lives (a chain owned by its first segment
    /// charges its next ones through these).
    #[inline]
    pub(crate) fn parts(&self) -> (&PoolRef, Option<AccountPtr>) {
        (&self.pool, self.tenant)
    }

    /// The size class of the slab this buffer holds now (it changes when a write promotes it).
    pub fn class(&self) -> PoolClass {
        self.class
    }

    /// The id of the tenant this buffer is charged to, if any.
    pub fn tenant(&self) -> Option<&str> {
        // SAFETY: the buffer's charge keeps the account alive as long as `self`.
        self.tenant.map(|account| unsafe { account.get() }.id())
    }

    /// Bytes written so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether nothing has been written (or everything was cleared).
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Bytes this buffer can hold before a write promotes it: its class's capacity, or its
    /// allocated size when Oversize.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slab.capacity()
    }

    /// Forgets the written bytes; the capacity (and the charge) stay.
    pub fn clear(&mut self) {
        self.mark_exposed();
        self.slab.clear();
    }

    /// Shortens the written bytes to `len`; does nothing if `len >= self.len()`.
    pub fn truncate(&mut self, len: usize) {
        self.mark_exposed();
        self.slab.truncate(len);
    }

    /// Resizes the written bytes to `new_len`, filling new bytes with `value`.
    ///
    /// # Panics
    ///
    /// When growing is refused, as [`reserve`](Self::reserve) does.
    #[track_caller]
    pub fn resize(&mut self, new_len: usize, value: u8) {
        match new_len.checked_sub(self.len()) {
            Some(additional) => self.reserve(additional),
            None => self.mark_exposed(), // shrinking: remember what was written
        }
        self.slab.resize(new_len, value);
    }

    /// Appends `data`, promoting the buffer once if it does not fit.
    ///
    /// # Panics
    ///
    /// When growing is refused, as [`reserve`](Self::reserve) does.
    #[track_caller]
    #[inline]
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.reserve(data.len());
        self.slab.extend_from_slice(data);
    }

    /// Makes room for at least `additional` more bytes, promoting the buffer to the class
    /// that fits `len() + additional` (or growing it as Oversize) when needed.
    ///
    /// # Panics
    ///
    /// When [`try_reserve`](Self::try_reserve) would return an error: the request passes
    /// `max_request_bytes`, a hard limit refuses the charge, or the allocator fails. The
    /// message names `try_reserve`, the fallible form.
    #[track_caller]
    #[inline]
    pub fn reserve(&mut self, additional: usize) {
        if let Err(err) = self.try_reserve(additional) {
            crate::error::refused(err, "PooledBuf::try_reserve");
        }
    }

    /// Makes room for at least `additional` more bytes, or says why not. On error the buffer,
    /// its charge and every figure of the pool (but the refusal counters) are unchanged.
    ///
    /// # Errors
    ///
    /// [`PoolError::TooLarge`] past `max_request_bytes` or on overflow,
    /// [`PoolError::TenantHardLimit`] / [`PoolError::PoolLimit`] when a limit refuses the
    /// extra charge, [`PoolError::AllocFailed`] when the allocator refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, PoolClass, PoolError};
    ///
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("capped");
    /// tenant.set_hard_limit(Some(64 * 1024));
    /// let mut buf = tenant.acquire(100);
    /// buf.try_reserve(10_000)?; // Small -> Medium: 60 KiB more, within the limit
    /// assert_eq!(buf.class(), PoolClass::Medium);
    /// let err = buf.try_reserve(100_000).unwrap_err();
    /// assert!(matches!(err, PoolError::TenantHardLimit { .. }));
    /// assert_eq!(buf.class(), PoolClass::Medium);
    /// # Ok::<(), PoolError>(())
    /// ```
    #[inline]
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), PoolError> {
        self.try_reserve_within(additional, usize::MAX)
    }

    /// [`Self::try_reserve`], growing an Oversize buffer to at most `within` bytes beyond
    /// what it needs (a body collector's `max`: no point doubling past it).
    #[inline]
    pub(crate) fn try_reserve_within(
        &mut self,
        additional: usize,
        within: usize,
    ) -> Result<(), PoolError> {
        match self.growth_needed(additional)? {
            None => Ok(()),
            Some(needed) => self.promote(needed, within),
        }
    }

    /// Makes room for at least `additional` more bytes, waiting while a hard limit or
    /// `max_live_bytes` refuses the growth and waiting can help: the waiting form of
    /// [`try_reserve`](Self::try_reserve), for writers that would rather wait than fail (a
    /// request body read straight into the buffer). Waiting follows the rules of
    /// [`Tenant::acquire_wait`](crate::Tenant::acquire_wait); a growth step waits in line
    /// like a new request. Dropping the future leaves the buffer and every figure as they
    /// were.
    ///
    /// # Errors
    ///
    /// What [`try_reserve`](Self::try_reserve) returns when waiting cannot help:
    /// `TooLarge`, a growth past a limit itself (`needed > limit`), `AllocFailed`.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(128 * 1024));
    /// let mut frame = tenant.acquire(100);
    /// let other = tenant.acquire(64 * 1024);
    /// let growing = async {
    ///     frame.reserve_wait(60_000).await?; // 4 KiB -> 64 KiB: waits for `other`
    ///     frame.extend_from_slice(&[1; 60_000]);
    ///     Ok::<_, axon_buffer::PoolError>(frame)
    /// };
    /// let release = async { drop(other) };
    /// let (grown, ()) = tokio::join!(growing, release);
    /// assert_eq!(grown?.len(), 60_000);
    /// # Ok::<(), axon_buffer::PoolError>(())
    /// # }).unwrap();
    /// ```
    pub async fn reserve_wait(&mut self, additional: usize) -> Result<(), PoolError> {
        self.reserve_wait_within(additional, usize::MAX).await
    }

    /// [`Self::reserve_wait`], growing an Oversize buffer to at most `within` bytes beyond
    /// what it needs (a body collector's `max`).
    pub(crate) async fn reserve_wait_within(
        &mut self,
        additional: usize,
        within: usize,
    ) -> Result<(), PoolError> {
        let Some(needed) = self.growth_needed(additional)? else {
            return Ok(());
        };
        let (class, capacity, extra) = self.growth(needed, within);
        let charged = self
            .pool
            .charge_wait(self.tenant, extra, Purpose::Growth, capacity as u64)
            .await?;
        self.grow(class, capacity, extra, charged)
    }

    /// The bytes the buffer must hold for `additional` more, if it must grow (`None`: it
    /// has room), or `TooLarge`.
    #[inline]
    fn growth_needed(&self, additional: usize) -> Result<Option<usize>, PoolError> {
        if self.fits(additional) {
            return Ok(None);
        }
        self.pool
            .check_request(self.len().checked_add(additional))
            .map(Some)
    }

    /// Whether `additional` more bytes fit as the buffer is: within its capacity and
    /// `max_request_bytes`, so that a reserve is a no-op.
    #[inline]
    pub(crate) fn fits(&self, additional: usize) -> bool {
        self.len().checked_add(additional).is_some_and(|needed| {
            needed <= self.capacity() && needed <= self.pool.config.max_request_bytes
        })
    }

    /// Moves the buffer to a slab that holds `needed` bytes, charging the difference first.
    fn promote(&mut self, needed: usize, within: usize) -> Result<(), PoolError> {
        let (class, capacity, extra) = self.growth(needed, within);
        let charged = self
            .pool
            .charge(self.tenant, extra, Purpose::Growth)
            .map_err(|err| err.for_growth(capacity as u64))?;
        self.grow(class, capacity, extra, charged)
    }

    /// The class, capacity and extra charge of a buffer grown to hold `needed` bytes, an
    /// Oversize one to at most `within` bytes unless it needs more.
    fn growth(&self, needed: usize, within: usize) -> (PoolClass, usize, u64) {
        let class = PoolClass::for_size(needed);
        let capacity = match class {
            PoolClass::Oversize => self.oversize_capacity(needed, within),
            class => class.capacity(),
        };
        (
            class,
            capacity,
            (capacity as u64).saturating_sub(self.charged),
        )
    }

    /// Moves the buffer to its new slab, `extra` bytes already charged for it; gives the
    /// charge back if the allocator refuses.
    fn grow(
        &mut self,
        class: PoolClass,
        capacity: usize,
        extra: u64,
        charged: Charged,
    ) -> Result<(), PoolError> {
        let exposed = self.exposed();
        let grown = if class == PoolClass::Oversize && self.class == PoolClass::Oversize {
            self.pool.grow_oversize(&mut self.slab, capacity)
        } else {
            let taken = match class {
                PoolClass::Oversize => self.pool.allocate_oversize(capacity),
                class => self.pool.take_slab(class),
            };
            taken.map(|mut slab| {
                slab.extend_from_slice(&self.slab);
                let old = std::mem::replace(&mut *self.slab, slab);
                self.pool.release_slab(old, self.class, exposed);
                self.exposed = self.slab.len();
            })
        };
        if let Err(err) = grown {
            self.pool.debit(self.tenant, extra, Purpose::Growth);
            return Err(err);
        }
        charged.count_soft(self.tenant);
        self.pool.count_promotion();
        self.class = class;
        self.charged += extra;
        if let (Some(id), Some(leaks)) = (self.tracked, &self.pool.leaks) {
            leaks.promoted(id, class, self.slab.capacity());
        }
        Ok(())
    }

    /// The capacity an Oversize buffer grows to for `needed` bytes: at least double the
    /// capacity now (so writing N bytes costs O(N)), within `max_request_bytes`, but only
    /// `needed` when the doubling alone would not fit the room the limits leave (a 41 MiB
    /// upload under a 64 MiB hard limit must not be refused for asking 80 MiB).
    fn oversize_capacity(&self, needed: usize, within: usize) -> usize {
        let doubled = self
            .capacity()
            .saturating_mul(2)
            .min(self.pool.config.max_request_bytes)
            .min(within)
            .max(needed);
        let room = self.pool.room(self.tenant);
        let extra = (doubled as u64).saturating_sub(self.charged);
        if doubled > needed && extra > room {
            needed
        } else {
            doubled
        }
    }

    /// Reads from `reader` until `max` bytes were appended or it reports end of file;
    /// returns how many bytes were appended. Retries on [`io::ErrorKind::Interrupted`].
    ///
    /// The reader is lent only zero-filled memory (never stale bytes of an earlier user),
    /// and a reader that reports more bytes than it was lent is refused with
    /// [`io::ErrorKind::InvalidData`]. A full buffer is promoted only once the reader has
    /// given at least one more byte. On an error, what earlier reads of this call appended
    /// stays in the buffer; a byte read just before a refused promotion is lost with the
    /// error.
    ///
    /// # Errors
    ///
    /// The reader's errors, and a [`PoolError`] (wrapped in [`io::Error`]) when the buffer
    /// cannot grow to take more.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::default();
    /// let mut buf = pool.acquire(16);
    /// let mut frame: &[u8] = b"hello, world";
    /// assert_eq!(buf.read_from(&mut frame, 5)?, 5);
    /// assert_eq!(&buf[..], b"hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_from<R: io::Read>(&mut self, reader: &mut R, max: usize) -> io::Result<usize> {
        let mut total = 0;
        while total < max {
            if self.spare_within_limit() == 0 {
                // Full (or at `max_request_bytes`): read one byte before growing, so a reader
                // at end of file costs no promotion and no TooLarge.
                let mut probe = [0u8; 1];
                let read = loop {
                    match reader.read(&mut probe) {
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other?,
                    }
                };
                match read {
                    0 => break,
                    1 => {}
                    read => return Err(lying_reader(read, 1)),
                }
                self.try_reserve(1)?;
                self.slab.push(probe[0]);
                total += 1;
                continue;
            }
            let start = self.len();
            let lent = (max - total).min(self.spare_within_limit());
            self.slab.resize(start + lent, 0);
            self.mark_exposed();
            // Whatever happens in the reader, even a panic, the zeros lent to it go again.
            let mut lend = Lend {
                slab: &mut self.slab,
                keep: start,
            };
            let read = match reader.read(&mut lend.slab[start..]) {
                Ok(0) => break, // end of file
                Ok(read) if read <= lent => read,
                Ok(read) => return Err(lying_reader(read, lent)),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => 0,
                Err(err) => return Err(err),
            };
            lend.keep = start + read;
            total += read;
        }
        Ok(total)
    }

    /// Turns the buffer into [`Bytes`] without copying: the `Bytes` points at the slab, and
    /// clones and slices share it. The slab returns to the pool (and the tenant is debited)
    /// when the last clone or slice drops, on whatever thread.
    ///
    /// A small slice pins the whole slab and its charge until it drops. Turning the `Bytes`
    /// back into `BytesMut` or `Vec` copies.
    ///
    /// # Panics
    ///
    /// Only if the allocator cannot provide the small owner box that
    /// [`Bytes::from_owner`] makes, in which case the process aborts, as for any allocation
    /// through the global allocator; this is the one path of the crate that can abort on
    /// out-of-memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::default();
    /// let mut buf = pool.acquire(5);
    /// buf.extend_from_slice(b"hello");
    /// let ptr = buf.as_ptr();
    /// let bytes = buf.freeze();
    /// assert_eq!(bytes.as_ptr(), ptr); // zero copy
    /// let clone = bytes.clone();
    /// drop(bytes);
    /// assert_eq!(pool.snapshot().live_bytes, 4096);
    /// drop(clone);
    /// assert_eq!(pool.snapshot().live_bytes, 0);
    /// ```
    #[inline]
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }

    /// Takes the bytes out of the pool for good, without copying: the tenant and the pool
    /// are debited now, and the slab never comes back.
    pub fn into_vec(mut self) -> Vec<u8> {
        // SAFETY: the slab is taken once: `Drop` takes it only while `charged` is not 0,
        // and it is set to 0 below, before `self` drops.
        let slab = unsafe { ManuallyDrop::take(&mut self.slab) };
        self.pool.count_detached(self.class);
        self.pool.debit(
            self.tenant,
            std::mem::take(&mut self.charged),
            Purpose::Buffer,
        );
        self.untrack();
        slab
    }

    #[inline]
    fn mark_exposed(&mut self) {
        self.exposed = self.exposed();
    }

    /// How many leading bytes of the slab may hold this buffer's data: the high-water mark
    /// recorded before every shrink (and over every chunk lent), and the length now. Writes
    /// only grow the length, so they need not record anything.
    #[inline]
    fn exposed(&self) -> usize {
        self.exposed.max(self.slab.len())
    }

    /// Closes the leak tracker's record, if this buffer was sampled.
    #[inline]
    fn untrack(&mut self) {
        if let (Some(id), Some(leaks)) = (self.tracked.take(), &self.pool.leaks) {
            leaks.closed(id);
        }
    }

    /// The longest chunk `chunk_mut` may lend: the spare capacity, within `max_request_bytes`.
    #[inline]
    fn spare_within_limit(&self) -> usize {
        (self.capacity() - self.len()).min(self.remaining_mut())
    }
}

/// Zero-filled bytes lent to a reader: on drop (after the read, or while a panic unwinds
/// through it) the slab is cut back to `keep`, the bytes the reader really wrote.
struct Lend<'a> {
    slab: &'a mut Vec<u8>,
    keep: usize,
}

impl Drop for Lend<'_> {
    fn drop(&mut self) {
        self.slab.truncate(self.keep);
    }
}

/// The error for a `Read` that reports more bytes than it was lent.
fn lying_reader(read: usize, lent: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("reader reported {read} bytes read into a {lent}-byte buffer"),
    )
}

impl Drop for PooledBuf {
    #[inline(always)]
    fn drop(&mut self) {
        if self.charged == 0 {
            return; // into_vec took the slab and settled the accounts
        }
        // SAFETY: a buffer is always charged (a slab's capacity is at least 4 KiB), so
        // `charged` is 0 only after `into_vec` took the slab; this is the other, last take.
        let slab = unsafe { ManuallyDrop::take(&mut self.slab) };
        self.pool.give_back(
            slab,
            self.class,
            self.exposed,
            self.tenant,
            self.charged,
            self.caps,
        );
        if self.tracked.is_some() {
            self.untrack();
        }
    }
}

impl Deref for PooledBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        &self.slab
    }
}

impl DerefMut for PooledBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.slab
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.slab
    }
}

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.slab
    }
}

impl fmt::Debug for PooledBuf {
    /// Shows the class, length, capacity and tenant; never the contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf")
            .field("class", &self.class)
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("tenant", &self.tenant())
            .finish_non_exhaustive()
    }
}

impl From<PooledBuf> for Bytes {
    /// Same as [`PooledBuf::freeze`]: no copy.
    fn from(buf: PooledBuf) -> Bytes {
        buf.freeze()
    }
}

impl Extend<u8> for PooledBuf {
    /// # Panics
    ///
    /// When growing is refused, as [`PooledBuf::reserve`] does.
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        self.reserve(iter.size_hint().0);
        for byte in iter {
            if self.spare_within_limit() == 0 {
                self.reserve(1);
            }
            self.slab.push(byte);
        }
    }
}

impl<'a> Extend<&'a u8> for PooledBuf {
    /// # Panics
    ///
    /// When growing is refused, as [`PooledBuf::reserve`] does.
    fn extend<I: IntoIterator<Item = &'a u8>>(&mut self, iter: I) {
        self.extend(iter.into_iter().copied());
    }
}

impl io::Write for PooledBuf {
    /// Appends all of `data`, or nothing: a refused promotion is returned as an
    /// [`io::Error`] wrapping the [`PoolError`] (kind `OutOfMemory` for an allocation
    /// failure). Never panics.
    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.try_reserve(data.len())?;
        self.slab.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// SAFETY: callers of `advance_mut` rely on `chunk_mut` and `remaining_mut` being truthful:
// 1. `chunk_mut` lends only spare capacity within `remaining_mut`; 2. `advance_mut` asserts
// `cnt` fits that bound before moving the length; 3. growth goes through `try_reserve`.
unsafe impl BufMut for PooledBuf {
    /// `max_request_bytes - len()`: how far the buffer may grow.
    #[inline]
    fn remaining_mut(&self) -> usize {
        self.pool
            .config
            .max_request_bytes
            .saturating_sub(self.len())
    }

    /// # Panics
    ///
    /// When `cnt` is more than the chunk `chunk_mut` lends.
    ///
    /// # Safety
    ///
    /// `BufMut::advance_mut`'s: the first `cnt` bytes of the chunk lent are initialised.
    #[inline]
    unsafe fn advance_mut(&mut self, cnt: usize) {
        let lendable = self.spare_within_limit();
        assert!(
            cnt <= lendable,
            "advance_mut({cnt}) past the {lendable} bytes chunk_mut lends"
        );
        let len = self.slab.len() + cnt;
        // SAFETY: `cnt <= capacity - len` (asserted above) keeps the length in the allocation,
        // and this unsafe fn's caller guarantees the first `cnt` bytes of the chunk lent at
        // `len` are initialised, so every byte below the new length is, as `set_len` needs.
        unsafe { self.slab.set_len(len) };
    }

    /// Lends the spare capacity, promoting the buffer first when it is full.
    ///
    /// # Panics
    ///
    /// When the buffer is full and promotion is refused (a hard limit, `max_live_bytes`, or
    /// the allocator): an empty chunk would make `put_slice` loop forever, so this is a
    /// deliberate exception to `BufMut`'s "should not panic". Call
    /// [`PooledBuf::try_reserve`] first and hand `(&mut buf).limit(n)` to generic writers.
    #[inline]
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.len() == self.capacity() && self.remaining_mut() > 0 {
            self.reserve(1);
        }
        let lend = self.spare_within_limit();
        let start = self.len();
        self.exposed = self.exposed.max(start + lend);
        UninitSlice::uninit(&mut self.slab.spare_capacity_mut()[..lend])
    }

    /// Appends all of `src`, promoting once if needed.
    ///
    /// # Panics
    ///
    /// When growing is refused, as [`PooledBuf::reserve`] does (including past
    /// `remaining_mut`).
    #[inline]
    fn put_slice(&mut self, src: &[u8]) {
        self.extend_from_slice(src);
    }

    /// Appends `cnt` copies of `val`, promoting once if needed.
    ///
    /// # Panics
    ///
    /// When growing is refused, as [`PooledBuf::reserve`] does.
    fn put_bytes(&mut self, val: u8, cnt: usize) {
        self.reserve(cnt);
        let len = self.len() + cnt;
        self.slab.resize(len, val);
    }
}
