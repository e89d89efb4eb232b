//! [`PooledChain`]: a payload as pooled segments, charged what it holds; frozen into a
//! [`BytesChain`] of `Bytes` over the same memory.
//!
//! # Why a chain
//!
//! A [`PooledBuf`] is contiguous, so it is charged its size class: a 3 MiB body holds a
//! 10 MiB Huge slab, a 200 KiB body a 1 MiB Large one. A chain holds the same payload in
//! several slabs and is charged their sum, which is never more than the payload plus one
//! Medium slab: `capacity() <= len() + 64 KiB` once the bytes it made room for are written
//! (a payload of at most 4 KiB is one Small slab). Past 10 MiB the segments still come from
//! the free lists and go back to them: a chain never allocates an Oversize slab.
//!
//! # The segment-size rule
//!
//! A chain takes segments only when a write (or [`try_reserve`](PooledChain::try_reserve),
//! or a body's size hint) needs more room than it has, and then exactly what covers the
//! bytes announced, biggest slabs first:
//!
//! 1. An empty chain asked for at most 4 KiB takes one Small slab.
//! 2. Otherwise as many Huge (10 MiB) slabs as the bytes fill, then as many Large (1 MiB)
//!    slabs, then Medium (64 KiB) slabs for the rest; a remainder that a Huge or Large slab
//!    covers with less than 64 KiB to spare takes that slab instead of the smaller ones.
//!
//! So a body of known length (a `Content-Length`, a `try_reserve` of the whole payload)
//! is a handful of big segments (41 MiB: 4 Huge and 1 Large; 3 MiB: 3 Large), and a body
//! of unknown length grows by the size of each write, which for hyper's frames (8 to
//! 400 KiB) is one Medium slab at a time: never more than the next segment, and never a
//! copy of what is already written. Whatever is written lands in the segments in order;
//! every segment before the one being written is full.
//!
//! Why these sizes, measured with `cargo bench --bench chain` (benches/chain.rs, arms
//! interleaved; benches/README.md has the table):
//!
//! - Copying is the cost, not the segments: a 41 MiB body with a length (4 Huge and 1
//!   Large segments) and without (656 Medium ones) collect within 10-20% of each other,
//!   and both at 0.27-0.32x the time of `BytesMut` or `collect().to_bytes()`, which take a
//!   fresh mapping of 41 MiB and fault in its 10 500 pages for every body (the chain's
//!   slabs come back warm: 0 page faults a round). Capping known lengths at Large slabs
//!   (41 segments) measured the same as Huge ones, so the rule keeps Huge: fewer segments,
//!   fewer owner boxes at `freeze`, and fewer slabs against `max_idle_per_class`.
//! - The idle cap of 64 slabs a class, set for whole slabs: a 12 or 41 MiB chunked body
//!   holds 192 or 656 Medium segments, and under it all but 64 were freed on every
//!   return. In a warm benchmark process glibc handed them out again warm, but in a fresh
//!   one (its trim threshold still 128 KiB) it trimmed its heap each time and the next
//!   body faulted every page in again: a 12 MiB chunked body took 3.2 ms against 0.92 ms
//!   for `BytesMut`, 2 000 page faults a body. So Medium segments return under
//!   `max_idle_bytes` alone (`max_idle_per_class` still caps the rest): 0.91 ms. Bodies
//!   with a length, whose size hint picks big segments, stay well under either cap.
//! - Fixed small carriers (the AWS S3 transfer manager's 64 KiB parts, ScyllaDB's 128 KiB
//!   fragments) are what a chain of unknown length uses (Medium slabs): they keep the
//!   charge within 64 KiB of the payload, which fragments growing by 1.5x (Redpanda's
//!   `iobuf`) do not promise once past 128 KiB, and they need no size class of their own.
//! - A chain never consolidates: unlike Netty's `CompositeByteBuf` (which copies its
//!   components into one past 16 of them, about 19 GB copied for a 200 MB body), it
//!   copies only when asked to ([`BytesChain::to_bytes`]), as `http-body-util`'s
//!   `Collected::aggregate()` does not and `to_bytes()` does.
//!
//! # Waiting and hold-and-wait
//!
//! [`reserve_wait`](PooledChain::reserve_wait) waits for a whole step at once (every
//! segment a write or a size hint needs, charged as one request), declaring what the chain
//! holds already, as a growing buffer does. A body of known length therefore waits once,
//! holding nothing, for all of its segments: under a saturated budget such bodies queue
//! as contiguous buffers do, never holding half a payload each. A chunked body grows a
//! step at a time while it holds the rest: when every live byte under a limit is held by
//! requests that wait under it (two chains each holding half a tenant's limit and waiting
//! for more), the youngest fails with [`PoolError::WaitDeadlock`] (`waiting_helps()`
//! false), so waits never hang.

mod frozen;

pub use frozen::BytesChain;

use bytes::buf::UninitSlice;
use bytes::BufMut;
use std::fmt;
use std::io;

use crate::inner::{AccountPtr, Charged, PoolRef, Purpose};
use crate::{BufferPool, PoolClass, PoolError, PooledBuf, Tenant};

/// Spare bytes a chain may hold beyond what was announced: one Medium slab.
const SLACK: usize = 64 * 1024;

/// A payload held as pooled segments, charged the sum of their capacities (never more than
/// the payload plus 64 KiB once written); written through [`bytes::BufMut`],
/// [`io::Write`] or [`try_extend_from_slice`](Self::try_extend_from_slice), then frozen into
/// a [`BytesChain`] without copying.
///
/// A chain starts empty and charges nothing; it takes segments as writes need them (the
/// rule is in the module docs: biggest slabs first for the bytes announced, Medium slabs
/// for the rest). Segments never move, so writing never copies what is already written.
/// Dropping the chain returns every segment and its charge.
///
/// `PooledChain` is `Send + Sync + 'static`.
///
/// # Examples
///
/// ```
/// use axon_buffer::BufferPool;
/// use bytes::{Buf, BufMut};
///
/// let pool = BufferPool::default();
/// let tenant = pool.tenant("acme");
/// tenant.set_hard_limit(Some(8 << 20));
/// let mut chain = tenant.chain();
/// chain.try_reserve(5 << 20)?; // 5 MiB: five Large segments, charged 5 MiB, not 10
/// chain.put_bytes(7, 5 << 20);
/// assert_eq!(chain.capacity(), 5 << 20);
/// assert_eq!(tenant.live_bytes(), 5 << 20);
///
/// let frozen = chain.freeze(); // no copy: a Bytes a segment
/// assert_eq!(frozen.segments(), 5);
/// assert_eq!(frozen.remaining(), 5 << 20);
/// drop(frozen);
/// assert_eq!(tenant.live_bytes(), 0);
/// # Ok::<(), axon_buffer::PoolError>(())
/// ```
#[must_use = "dropping a PooledChain returns its segments at once"]
pub struct PooledChain {
    /// In payload order; every segment before `cursor` is full, every one after it empty.
    segments: Segments,
    /// The segment being written (or `segments.len()` when all are full).
    cursor: usize,
    /// Bytes written, over all segments.
    len: usize,
    /// The segments' capacities summed: what the chain is charged.
    capacity: usize,
    /// Who the segments are charged to.
    owner: Owner,
    /// `max_request_bytes`, which bounds the chain's length as it bounds a buffer's.
    max_request: usize,
}

/// What a chain's segments are charged through: something that keeps the tenant's account
/// alive for as long as the chain may charge it.
enum Owner {
    /// A handle of its own ([`Tenant::chain`]).
    Tenant(Tenant),
    /// The pool's handle ([`BufferPool::chain`]), no tenant.
    Pool(BufferPool),
    /// The chain's first segment, whose pool handle and account the next segments are
    /// charged through: its charge keeps the account alive as long as it lives (the ledger
    /// invariant, `inner/account.rs`), as any buffer's does. It saves a collected chain the
    /// clone and drop of a `Tenant` handle (three reference counts, 21.5 ns alone; a 64 KiB
    /// body with a length went from 1.04-1.06x `BytesMut`'s time to 0.97-1.01x,
    /// `benches/README.md`). Only the collect loops make such a chain (`body.rs`,
    /// [`PooledChain::lent`]): while it is empty they pass their own handles to every step,
    /// and they never return it empty. A chain never gives its first segment back while it
    /// lives: a failed step truncates to the segments it held before.
    First,
}

impl Tenant {
    /// An empty [`PooledChain`] charged to this tenant: it charges nothing until written.
    ///
    /// Use a chain for payloads that need not be contiguous: it is charged what it holds
    /// (within 64 KiB), where a [`PooledBuf`] is charged its size class.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// let mut chain = tenant.chain();
    /// assert_eq!(chain.capacity(), 0);
    /// chain.try_extend_from_slice(&[1; 200 * 1024])?; // 200 KiB: four Medium slabs
    /// assert_eq!(chain.capacity(), 256 * 1024); // a PooledBuf would hold 1 MiB
    /// assert_eq!(tenant.live_bytes(), 256 * 1024);
    /// # Ok::<(), axon_buffer::PoolError>(())
    /// ```
    pub fn chain(&self) -> PooledChain {
        let max_request = self.parts().0.config.max_request_bytes;
        PooledChain::new(Owner::Tenant(self.clone()), max_request)
    }
}

impl BufferPool {
    /// An empty [`PooledChain`] charged to no tenant; [`Tenant::chain`] describes it.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    /// use std::io::Write;
    ///
    /// let pool = BufferPool::default();
    /// let mut chain = pool.chain();
    /// chain.write_all(b"hello")?;
    /// assert_eq!(chain.capacity(), 4096); // one Small slab
    /// assert_eq!(chain.freeze().to_bytes(), &b"hello"[..]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn chain(&self) -> PooledChain {
        let max_request = self.parts().0.config.max_request_bytes;
        PooledChain::new(Owner::Pool(self.clone()), max_request)
    }
}

/// The segments a chain takes for `bytes` more than its capacity (module docs, rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    huge: usize,
    large: usize,
    medium: usize,
    small: usize,
}

impl Plan {
    fn for_bytes(mut bytes: usize, empty: bool) -> Plan {
        if empty && bytes <= PoolClass::Small.capacity() {
            return Plan {
                huge: 0,
                large: 0,
                medium: 0,
                small: 1,
            };
        }
        let mut take = |class: PoolClass| {
            let capacity = class.capacity();
            let mut count = bytes / capacity;
            bytes %= capacity;
            if bytes > 0 && capacity - bytes <= SLACK {
                count += 1;
                bytes = 0;
            }
            count
        };
        let huge = take(PoolClass::Huge);
        let large = take(PoolClass::Large);
        let medium = take(PoolClass::Medium);
        Plan {
            huge,
            large,
            medium,
            small: 0,
        }
    }

    /// The classes, biggest first.
    fn classes(self) -> impl Iterator<Item = PoolClass> {
        [
            (PoolClass::Huge, self.huge),
            (PoolClass::Large, self.large),
            (PoolClass::Medium, self.medium),
            (PoolClass::Small, self.small),
        ]
        .into_iter()
        .flat_map(|(class, count)| std::iter::repeat_n(class, count))
    }

    fn count(self) -> usize {
        self.huge + self.large + self.medium + self.small
    }

    /// Bytes the segments hold (and are charged) in all.
    fn bytes(self) -> u64 {
        self.classes().map(|class| class.capacity() as u64).sum()
    }
}

impl PooledChain {
    fn new(owner: Owner, max_request: usize) -> PooledChain {
        PooledChain {
            segments: Segments::default(),
            cursor: 0,
            len: 0,
            capacity: 0,
            owner,
            max_request,
        }
    }

    /// An empty chain to be owned by its first segment ([`Owner::First`]), for a collect
    /// loop that holds a handle of `pool` throughout: until the chain holds a segment, every
    /// step must come through [`try_reserve_as`](Self::try_reserve_as) or
    /// [`reserve_wait_as`](Self::reserve_wait_as) with that handle's parts, and the loop
    /// must not hand it out empty.
    pub(crate) fn lent(pool: &PoolRef) -> PooledChain {
        PooledChain::new(Owner::First, pool.config.max_request_bytes)
    }

    /// The pool and the account the next segments are charged through.
    fn parts(&self) -> (&PoolRef, Option<AccountPtr>) {
        match &self.owner {
            Owner::Tenant(tenant) => tenant.parts(),
            Owner::Pool(pool) => pool.parts(),
            Owner::First => self
                .segments
                .get(0)
                .expect("a chain owned by its first segment holds one")
                .parts(),
        }
    }

    /// Bytes written, over all segments.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes its segments hold, summed: what the tenant and the pool are charged for it.
    /// Once the bytes made room for are written, at most `len() + 64 KiB`.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many segments (slabs) the chain holds.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The id of the tenant the chain is charged to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match &self.owner {
            Owner::Tenant(tenant) => Some(tenant.id()),
            Owner::Pool(_) => None,
            Owner::First => self.segments.get(0).and_then(PooledBuf::tenant),
        }
    }

    /// Whether `additional` more bytes fit in the segments the chain holds, within
    /// `max_request_bytes`: a reserve is then a no-op.
    #[inline]
    pub(crate) fn fits(&self, additional: usize) -> bool {
        self.len
            .checked_add(additional)
            .is_some_and(|total| total <= self.capacity && total <= self.max_request)
    }

    /// What the chain must take to hold `additional` more bytes (`None`: it has room), and
    /// the length it asks for, or `TooLarge` past `max_request_bytes` or on overflow.
    fn plan(&self, pool: &PoolRef, additional: usize) -> Result<Option<Plan>, PoolError> {
        if self.fits(additional) {
            return Ok(None);
        }
        let total = self.len.checked_add(additional);
        let total = pool.check_request(total)?;
        // `check_request` passed, so `total` is within `max_request_bytes`: it does not
        // fit only because it passes the capacity.
        debug_assert!(total > self.capacity);
        let plan = Plan::for_bytes(total - self.capacity, self.segments.is_empty());
        Ok(Some(plan))
    }

    /// Makes room for at least `additional` more bytes, taking the segments that cover
    /// them (the rule is in the module docs), all or nothing: on error the chain, its
    /// charge and every live figure are unchanged: a step of several segments is charged
    /// at once, before any slab is taken.
    ///
    /// # Errors
    ///
    /// [`PoolError::TooLarge`] when the chain would pass `max_request_bytes` (or on
    /// overflow), [`PoolError::TenantHardLimit`] / [`PoolError::PoolLimit`] when a limit
    /// refuses a segment (its `needed`, and so
    /// [`waiting_helps`](PoolError::waiting_helps), is the whole chain: what it holds plus
    /// the step), [`PoolError::AllocFailed`] when the allocator refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, PoolError};
    ///
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(4 << 20));
    /// let mut chain = tenant.chain();
    /// chain.try_reserve(3 << 20)?;
    /// assert_eq!(chain.capacity(), 3 << 20);
    /// let err = chain.try_reserve(5 << 20).unwrap_err(); // 5 MiB in all: never fits
    /// assert!(matches!(err, PoolError::TenantHardLimit { .. }));
    /// assert!(!err.waiting_helps());
    /// assert_eq!(chain.capacity(), 3 << 20);
    /// # Ok::<(), PoolError>(())
    /// ```
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), PoolError> {
        if self.fits(additional) {
            return Ok(());
        }
        let (pool, tenant) = self.parts();
        self.try_reserve_as(pool.clone(), tenant, additional)
    }

    /// [`try_reserve`](Self::try_reserve) through `pool` and `tenant`: the chain's own
    /// [`parts`](Self::parts), or its lender's while a [`lent`](Self::lent) chain is empty.
    pub(crate) fn try_reserve_as(
        &mut self,
        pool: PoolRef,
        tenant: Option<AccountPtr>,
        additional: usize,
    ) -> Result<(), PoolError> {
        let Some(plan) = self.plan(&pool, additional)? else {
            return Ok(());
        };
        let before = self.segments.len();
        let taken = self.take_now(pool, tenant, plan);
        match taken {
            Ok(()) => {
                self.capacity += plan.bytes() as usize;
                Ok(())
            }
            Err(err) => {
                self.segments.truncate(before); // the segments taken go back
                Err(err)
            }
        }
    }

    /// Appends the segments of `plan`, all charged at once before any slab is taken; on
    /// error the caller drops what was appended.
    fn take_now(
        &mut self,
        pool: PoolRef,
        tenant: Option<AccountPtr>,
        plan: Plan,
    ) -> Result<(), PoolError> {
        let needed = self.capacity as u64 + plan.bytes();
        if plan.count() == 1 {
            // One segment, the common step of a growing chain: the buffer's fast path.
            let class = plan.classes().next().expect("one segment");
            let (slab, charged) = pool
                .obtain(tenant, class, class.capacity())
                .map_err(|err| err.for_growth(needed))?;
            self.segments
                .push(PooledBuf::assemble(pool, tenant, class, slab, charged));
            return Ok(());
        }
        let charged = pool
            .charge(tenant, plan.bytes(), Purpose::Segments(plan.count() as u64))
            .map_err(|err| err.for_growth(needed))?;
        self.take_slabs(&pool, tenant, plan, charged)
    }

    /// Takes the slabs of `plan`, whose segments are charged already (`charged`), appending
    /// them; when the allocator refuses one, the charge of those not taken is given back.
    fn take_slabs(
        &mut self,
        pool: &PoolRef,
        tenant: Option<AccountPtr>,
        plan: Plan,
        charged: Charged,
    ) -> Result<(), PoolError> {
        let mut left = (plan.count() as u64, plan.bytes());
        // The soft limit's excess is counted once, with the first segment.
        let mut charged = Some(charged);
        for class in plan.classes() {
            let slab = match pool.take_slab(class) {
                Ok(slab) => slab,
                Err(err) => {
                    pool.debit(tenant, left.1, Purpose::Segments(left.0));
                    return Err(err); // the caller drops the segments taken
                }
            };
            let charged = charged.take().unwrap_or(Charged::FROM_STOCK);
            self.segments.push(PooledBuf::assemble(
                pool.clone(),
                tenant,
                class,
                slab,
                charged,
            ));
            left = (left.0 - 1, left.1 - class.capacity() as u64);
        }
        Ok(())
    }

    /// Makes room for at least `additional` more bytes as
    /// [`try_reserve`](Self::try_reserve) does, waiting while a hard limit or
    /// `max_live_bytes` refuses the step and waiting can help.
    ///
    /// The step (every segment it takes) waits in line as one request, declaring what the
    /// chain holds already: a body of known length waits once, for all of it, so it never
    /// holds part of its payload while it waits. When only waiters hold the room they wait
    /// for (two chunked chains each holding part of a limit), the youngest fails with
    /// [`PoolError::WaitDeadlock`] instead of waiting forever. Dropping the future charges
    /// nothing and leaves the chain as it was.
    ///
    /// # Errors
    ///
    /// What [`try_reserve`](Self::try_reserve) returns when waiting cannot help
    /// (`waiting_helps()` false): `TooLarge`, a chain that would pass a limit itself,
    /// `AllocFailed`, and `WaitDeadlock`.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(2 << 20));
    /// let other = tenant.acquire(1 << 20);
    /// let mut chain = tenant.chain();
    /// let growing = async {
    ///     chain.reserve_wait(2 << 20).await?; // waits for `other`
    ///     Ok::<_, axon_buffer::PoolError>(chain.capacity())
    /// };
    /// let (grown, ()) = tokio::join!(growing, async { drop(other) });
    /// assert_eq!(grown?, 2 << 20);
    /// # Ok::<(), axon_buffer::PoolError>(())
    /// # }).unwrap();
    /// ```
    pub async fn reserve_wait(&mut self, additional: usize) -> Result<(), PoolError> {
        if self.fits(additional) {
            return Ok(());
        }
        let (pool, tenant) = self.parts();
        self.reserve_wait_as(pool.clone(), tenant, additional).await
    }

    /// [`reserve_wait`](Self::reserve_wait) through `pool` and `tenant`, as
    /// [`try_reserve_as`](Self::try_reserve_as).
    pub(crate) async fn reserve_wait_as(
        &mut self,
        pool: PoolRef,
        tenant: Option<AccountPtr>,
        additional: usize,
    ) -> Result<(), PoolError> {
        let Some(plan) = self.plan(&pool, additional)? else {
            return Ok(());
        };
        if plan.count() == 1 {
            let class = plan.classes().next().expect("one segment");
            if let Some(slab) = pool.obtain_fast(tenant, class, class.capacity()) {
                let segment = PooledBuf::assemble(pool, tenant, class, slab, Charged::FROM_STOCK);
                self.capacity += segment.capacity();
                self.segments.push(segment);
                return Ok(());
            }
        }
        // The whole step waits as one request declaring what the chain holds (a body of
        // known length waits once for all of it); nothing after this await can be cut
        // short, so a dropped future leaves the chain as it was.
        let bytes = plan.bytes();
        let held = self.capacity as u64;
        let purpose = Purpose::Segments(plan.count() as u64);
        let charged = match pool.charge_now(tenant, bytes, purpose) {
            Some(charged) => charged,
            None => {
                pool.charge_wait(tenant, bytes, purpose, held + bytes)
                    .await?
            }
        };
        let before = self.segments.len();
        match self.take_slabs(&pool, tenant, plan, charged) {
            Ok(()) => {
                self.capacity += bytes as usize;
                Ok(())
            }
            Err(err) => {
                self.segments.truncate(before);
                Err(err)
            }
        }
    }

    /// Appends all of `data`, or nothing: room for the whole slice is made first (as
    /// [`try_reserve`](Self::try_reserve) does), then the bytes are copied once, into the
    /// segments in order.
    ///
    /// # Errors
    ///
    /// As [`try_reserve`](Self::try_reserve); nothing is written then.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::default();
    /// let mut chain = pool.chain();
    /// chain.try_extend_from_slice(&[1; 3000])?; // one Small slab
    /// chain.try_extend_from_slice(&[2; 3000])?; // then a Medium one: no copy of the first
    /// assert_eq!((chain.len(), chain.segments()), (6000, 2));
    /// # Ok::<(), axon_buffer::PoolError>(())
    /// ```
    pub fn try_extend_from_slice(&mut self, data: &[u8]) -> Result<(), PoolError> {
        self.try_reserve(data.len())?;
        self.write_reserved(data);
        Ok(())
    }

    /// Copies `data`, for which room was made, into the segments in order.
    #[inline]
    pub(crate) fn write_reserved(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let segment = self.segments.get_mut(self.cursor).expect("room was made");
            let spare = segment.capacity() - segment.len();
            if spare == 0 {
                self.cursor += 1;
                continue;
            }
            let (now, rest) = data.split_at(spare.min(data.len()));
            segment.extend_from_slice(now); // within its capacity: never promotes
            self.len += now.len();
            data = rest;
        }
    }

    /// The segment being written, past any full ones, if one has spare capacity.
    #[inline]
    fn current(&mut self) -> Option<&mut PooledBuf> {
        while let Some(segment) = self.segments.get(self.cursor) {
            if segment.len() < segment.capacity() {
                return self.segments.get_mut(self.cursor);
            }
            self.cursor += 1;
        }
        None
    }

    /// Turns the chain into a [`BytesChain`] without copying: each written segment becomes
    /// a [`Bytes`](bytes::Bytes) over the same slab (segments never written go back now).
    /// Each slab returns to the pool, and its charge to the tenant, when the last clone of
    /// its `Bytes` drops, on whatever thread.
    ///
    /// # Panics
    ///
    /// Only if the allocator cannot provide the small owner box that
    /// [`Bytes::from_owner`](bytes::Bytes::from_owner) makes for each segment, in which
    /// case the process aborts, as [`PooledBuf::freeze`] does.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::default();
    /// let mut chain = pool.chain();
    /// chain.try_extend_from_slice(&[7; 100_000])?;
    /// let frozen = chain.freeze();
    /// let copy = frozen.clone();
    /// drop(frozen);
    /// assert_eq!(pool.snapshot().live_bytes, 128 * 1024); // the clone holds the segments
    /// drop(copy);
    /// assert_eq!(pool.snapshot().live_bytes, 0);
    /// # Ok::<(), axon_buffer::PoolError>(())
    /// ```
    pub fn freeze(self) -> BytesChain {
        let len = self.len;
        let segments = self
            .segments
            .into_iter()
            .filter(|segment| !segment.is_empty())
            .map(PooledBuf::freeze)
            .collect();
        BytesChain::new(segments, len)
    }
}

/// A chain's segments in order, the first one inline: a chain of one segment (every
/// payload of at most 4 KiB) allocates nothing besides its slab. `rest` is empty while
/// `first` is `None`.
#[derive(Default)]
struct Segments {
    first: Option<PooledBuf>,
    rest: Vec<PooledBuf>,
}

impl Segments {
    #[inline]
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    #[inline]
    fn get(&self, index: usize) -> Option<&PooledBuf> {
        match index {
            0 => self.first.as_ref(),
            i => self.rest.get(i - 1),
        }
    }

    #[inline]
    fn get_mut(&mut self, index: usize) -> Option<&mut PooledBuf> {
        match index {
            0 => self.first.as_mut(),
            i => self.rest.get_mut(i - 1),
        }
    }

    /// Appends a segment. A Medium one, the class a chain grows by, from now on returns
    /// under the byte cap alone ([`PooledBuf::into_segment`]); a chain's Small slab and
    /// its big segments, few a payload, keep both caps as a buffer's do.
    #[inline]
    fn push(&mut self, segment: PooledBuf) {
        let segment = match segment.class() {
            PoolClass::Medium => segment.into_segment(),
            _ => segment,
        };
        match self.first {
            None => self.first = Some(segment),
            Some(_) => self.rest.push(segment),
        }
    }

    /// Drops the segments past the first `len`.
    fn truncate(&mut self, len: usize) {
        match len {
            0 => {
                self.rest.clear();
                self.first = None;
            }
            len => self.rest.truncate(len - 1),
        }
    }

    fn into_iter(mut self) -> impl Iterator<Item = PooledBuf> {
        let first = self.first.take();
        let rest = std::mem::take(&mut self.rest);
        first.into_iter().chain(rest)
    }
}

/// The segments a chain holds when it drops go back last to first, so that the free lists
/// (LIFO) hand the next chain of the thread the same slabs, mostly in the order it wrote
/// them (a full magazine spills pairs of slabs to the shared list, which swaps a few). A
/// frozen chain's segments go back the same way when it drops, but those read past go
/// back as they are read ([`BytesChain`]'s `advance`, as `write_all_buf` does), first to
/// last, and so do the unwritten ones `freeze` drops. Measured with `cargo bench
/// --bench chain -- 31` (`benches/README.md`): a chunked 12 MiB body (192 Medium
/// segments) took 1.04-1.07x `BytesMut`'s time this way, against 1.09-1.10x returned
/// first to last (the next chain then took them mostly in descending order). Why is not
/// settled: a plain copy into 192 slabs of 64 KiB took the same time in either order.
impl Drop for Segments {
    fn drop(&mut self) {
        while let Some(segment) = self.rest.pop() {
            drop(segment);
        }
        self.first.take();
    }
}

impl fmt::Debug for PooledChain {
    /// Shows the length, capacity, segments and tenant; never the contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledChain")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("segments", &self.segments.len())
            .field("tenant", &self.tenant())
            .finish_non_exhaustive()
    }
}

impl From<PooledChain> for BytesChain {
    /// Same as [`PooledChain::freeze`]: no copy.
    fn from(chain: PooledChain) -> BytesChain {
        chain.freeze()
    }
}

impl io::Write for PooledChain {
    /// Appends all of `data`, or nothing: a refused segment is returned as an
    /// [`io::Error`] wrapping the [`PoolError`] (as
    /// [`try_extend_from_slice`](PooledChain::try_extend_from_slice) returns it). Never
    /// panics.
    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.try_extend_from_slice(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// Callers of `advance_mut` rely on `chunk_mut` and `remaining_mut` being truthful:
// 1. `chunk_mut` lends only the spare capacity of the segment being written (through that
// segment's own `chunk_mut`), cut to `remaining_mut`; 2. `advance_mut` asserts `cnt` fits
// what `chunk_mut` lends before moving that segment's length (whose own `advance_mut`
// checks it again); 3. new segments come through `try_reserve`, never by moving bytes.
// SAFETY: so both are truthful, as `BufMut` requires (1-3).
unsafe impl BufMut for PooledChain {
    /// `max_request_bytes - len()`: how far the chain may grow.
    #[inline]
    fn remaining_mut(&self) -> usize {
        self.max_request.saturating_sub(self.len)
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
        if cnt == 0 {
            return;
        }
        let remaining = self.remaining_mut();
        let segment = self.current();
        let lendable = segment.as_ref().map_or(0, |s| s.capacity() - s.len());
        let lendable = lendable.min(remaining);
        assert!(
            cnt <= lendable,
            "advance_mut({cnt}) past the {lendable} bytes chunk_mut lends"
        );
        let segment = segment.expect("a lendable segment");
        // SAFETY: `cnt` fits the spare capacity of this segment (asserted above), which is
        // the chunk `chunk_mut` lent, and this unsafe fn's caller guarantees its first
        // `cnt` bytes are initialised, as the segment's `advance_mut` requires.
        unsafe { segment.advance_mut(cnt) };
        self.len += cnt;
    }

    /// Lends the spare capacity of the segment being written, taking a new segment first
    /// when the chain is full (a Small slab for an empty chain, then Medium ones).
    ///
    /// # Panics
    ///
    /// When the chain is full and the new segment is refused (a hard limit,
    /// `max_live_bytes`, or the allocator): an empty chunk would make `put_slice` loop
    /// forever, so this is a deliberate exception to `BufMut`'s "should not panic". Call
    /// [`PooledChain::try_reserve`] first and hand `(&mut chain).limit(n)` to generic
    /// writers.
    #[inline]
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        let remaining = self.remaining_mut();
        if self.len == self.capacity && remaining > 0 {
            if let Err(err) = self.try_reserve(1) {
                crate::error::refused(err, "PooledChain::try_reserve");
            }
        }
        match self.current() {
            Some(segment) => {
                let chunk = segment.chunk_mut();
                let lend = chunk.len().min(remaining);
                &mut chunk[..lend]
            }
            None => UninitSlice::new(&mut []),
        }
    }

    /// Appends all of `src`, taking the segments it needs first.
    ///
    /// # Panics
    ///
    /// When [`PooledChain::try_extend_from_slice`] would return an error; the message
    /// names it.
    #[inline]
    fn put_slice(&mut self, src: &[u8]) {
        if let Err(err) = self.try_extend_from_slice(src) {
            crate::error::refused(err, "PooledChain::try_extend_from_slice");
        }
    }

    /// Appends `cnt` copies of `val`, taking the segments it needs first.
    ///
    /// # Panics
    ///
    /// When [`PooledChain::try_reserve`] would return an error; the message names it.
    fn put_bytes(&mut self, val: u8, mut cnt: usize) {
        if let Err(err) = self.try_reserve(cnt) {
            crate::error::refused(err, "PooledChain::try_reserve");
        }
        while cnt > 0 {
            let segment = self.current().expect("room was made");
            let now = (segment.capacity() - segment.len()).min(cnt);
            segment.resize(segment.len() + now, val); // within its capacity
            self.len += now;
            cnt -= now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: usize = 1024;
    const M: usize = 1024 * 1024;

    fn plan(bytes: usize, empty: bool) -> (usize, usize, usize, usize) {
        let p = Plan::for_bytes(bytes, empty);
        (p.huge, p.large, p.medium, p.small)
    }

    #[test]
    fn plans_cover_the_bytes_within_the_slack() {
        assert_eq!(plan(1, true), (0, 0, 0, 1));
        assert_eq!(plan(4 * K, true), (0, 0, 0, 1));
        assert_eq!(plan(1, false), (0, 0, 1, 0));
        assert_eq!(plan(4 * K + 1, true), (0, 0, 1, 0));
        assert_eq!(plan(200 * K, true), (0, 0, 4, 0));
        assert_eq!(plan(3 * M, true), (0, 3, 0, 0));
        assert_eq!(plan(5 * M, true), (0, 5, 0, 0));
        assert_eq!(plan(M - 10, true), (0, 1, 0, 0));
        assert_eq!(plan(12 * M, true), (1, 2, 0, 0));
        assert_eq!(plan(41 * M, true), (4, 1, 0, 0));
        assert_eq!(plan(10 * M - 1, true), (1, 0, 0, 0));
        for bytes in [
            1,
            4096,
            4097,
            65_535,
            65_537,
            999_999,
            3 * M + 7,
            41 * M + 1,
        ] {
            for empty in [true, false] {
                let p = Plan::for_bytes(bytes, empty);
                let held = p.bytes() as usize;
                assert!(held >= bytes && held <= bytes + SLACK, "{bytes}: {p:?}");
            }
        }
    }
}
