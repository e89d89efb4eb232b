//! Request bodies straight into pooled buffers (feature `http-body`): `collect_body` on
//! [`Tenant`] and [`BufferPool`], and [`CollectError`].
//!
//! The bodies of hyper, axum, tonic and reqwest are [`http_body::Body`]s: a stream of frames
//! whose data chunks are `bytes::Buf`s (hyper's are `Bytes` cut from its read buffer). One
//! loop serves every body:
//!
//! 1. The body's [`size_hint`](http_body::Body::size_hint) decides the first buffer. An
//!    exact hint (a `Content-Length`) of at most `max` bytes is one acquire of that many
//!    bytes, so the buffer is in its final class from the start and is never promoted (and
//!    is charged that class's slab, as every buffer is).
//!    A lower bound above `max` is refused before anything is read or acquired. Any other
//!    hint gives a first buffer of the lower bound, or, with no lower bound (a chunked
//!    upload), one the size of the first data chunk.
//! 2. Each data frame is copied once, chunk by chunk, into the pooled buffer. When the
//!    whole frame does not fit as the buffer is, `try_reserve` makes room for it first (the
//!    buffer grows by its usual promotion rule; a refusal is an error, never a panic).
//!    Trailers are skipped. After each MiB copied in one poll the loop yields to the
//!    executor (waking its task), so a body whose frames are all ready at once does not
//!    hold a worker thread for its whole copy.
//! 3. On any error the buffer is dropped before the error is returned: the tenant and the
//!    pool are charged nothing, and nothing of the body is kept.
//!
//! Where the memory comes from is the one thing the waiting forms (`collect_body_wait`)
//! change, so the loop takes it from a `Room`: the handles refuse at once; `Waiting` waits
//! for the first buffer and for each growth step instead. An Oversize buffer never grows
//! past `max` for the doubling alone.
//!
//! `collect_body_chain` (and `_wait`) run the same loop into a [`PooledChain`], charged
//! what it holds instead of the class above it: the size hint's lower bound is reserved at
//! once (an exact `Content-Length` takes its final segments, biggest first, before the
//! first frame), and each frame past it takes the segments it needs (Medium slabs for
//! hyper's frames); nothing written is ever copied again.

use std::future::{self, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::Body;

use crate::inner::{AccountPtr, PoolRef};
use crate::{BufferPool, PoolError, PooledBuf, PooledChain, Tenant};

/// Why [`Tenant::collect_body`] or [`BufferPool::collect_body`] gave no buffer. `E` is the
/// body's own error type (`hyper::Error`, `axum::Error`, ...).
///
/// Whatever the variant, nothing was charged and nothing of the body was kept: the buffer,
/// if one was acquired, was dropped before the error was returned.
///
/// [`status_code`](CollectError::status_code) maps each variant to an HTTP status, and with
/// the `axum` feature the error is an axum response itself.
///
/// # Examples
///
/// ```
/// use axon_buffer::{BufferPool, CollectError};
/// use bytes::Bytes;
/// use http::StatusCode;
/// use http_body_util::Full;
///
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let pool = BufferPool::default();
/// let body = Full::new(Bytes::from(vec![7u8; 2048])); // Content-Length: 2048
/// let err = pool.tenant("acme").collect_body(body, 1024).await.unwrap_err();
/// assert!(matches!(err, CollectError::TooLarge { max: 1024, at_least: 2048 }));
/// assert_eq!(err.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
/// assert_eq!(pool.snapshot().acquisitions_total(), 0); // refused from the hint alone
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError<E> {
    /// The body itself failed: the connection broke, the client sent a malformed chunk, a
    /// `Content-Length` body ended early, or a body wrapper refused it. The body's error is
    /// the [`source`](std::error::Error::source).
    #[error("the request body failed")]
    Body(#[source] E),
    /// The body has more than `max` bytes: its size hint said so before anything was read,
    /// or more than `max` bytes arrived.
    #[error("request body of at least {at_least} bytes passes the {max}-byte maximum")]
    TooLarge {
        /// The `max` passed to `collect_body`.
        max: usize,
        /// Bytes the body has at least: the lower bound of its size hint, or the bytes
        /// received up to and including the frame that passed `max`.
        at_least: u64,
    },
    /// The pool refused the buffer or a growth step: a hard limit, `max_live_bytes`,
    /// `max_request_bytes` or the allocator. [`PoolError::waiting_helps`] says whether the
    /// same body can fit later.
    ///
    /// The message includes the [`PoolError`]'s, with its figures (the charge, the limit,
    /// the live bytes), so the error is not also its
    /// [`source`](std::error::Error::source): a report that prints the chain prints them
    /// once. Match the variant to get the `PoolError` itself.
    ///
    /// ```
    /// use axon_buffer::{BufferPool, CollectError};
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(8 << 20));
    /// let body = Full::new(Bytes::from(vec![0u8; 5 << 20])); // 5 MiB: a 10 MiB Huge slab
    /// let err = tenant.collect_body(body, 16 << 20).await.unwrap_err();
    /// assert!(matches!(err, CollectError::Pool(_)));
    /// let logged = err.to_string();
    /// assert!(logged.starts_with("the pool refused memory for the request body: tenant \"acme\""));
    /// assert!(logged.contains("a charge of 10 MiB"));
    /// assert!(logged.contains("past its limit of 8 MiB"));
    /// # });
    /// ```
    #[error("the pool refused memory for the request body: {0}")]
    Pool(PoolError),
}

impl<E> From<PoolError> for CollectError<E> {
    fn from(err: PoolError) -> Self {
        CollectError::Pool(err)
    }
}

impl Tenant {
    /// Reads a whole HTTP body into one buffer charged to this tenant, refusing bodies of
    /// more than `max` bytes.
    ///
    /// A body with an exact size hint (a request with `Content-Length`) of at most `max`
    /// bytes takes one buffer for that many bytes, in its final class, and is never
    /// promoted; one whose hint passes `max` is refused before anything is read or
    /// acquired. A body of unknown length (chunked) starts with a buffer the size of its
    /// first data chunk and grows as chunks arrive. Each byte is copied once, from the
    /// body's chunks into the buffer; trailers are ignored. After each MiB it copies in one
    /// poll it yields to the executor (its task woken at once), so a large body whose
    /// frames are all ready does not hold a worker thread for the whole copy.
    ///
    /// `max` is the caller's limit on the body; the tenant's hard limit and the pool's
    /// limits apply on top of it, to the buffer's charge: its class's slab, as for any
    /// buffer. A 300 KB body is charged 1 MiB (a Large slab), a 5 MiB body 10 MiB (a Huge
    /// slab), so an 8 MiB hard limit refuses a 5 MiB body; above 10 MiB the charge is the
    /// body's exact size.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, PoolClass};
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// let body = Full::new(Bytes::from(vec![1u8; 300_000])); // an exact size hint
    /// let buf = tenant.collect_body(body, 16 << 20).await?;
    /// assert_eq!(buf.len(), 300_000);
    /// assert_eq!(buf.class(), PoolClass::Large); // one acquire, in its final class
    /// assert_eq!(pool.snapshot().promotions_total, 0);
    /// let shared = buf.freeze(); // hand it to consumers, no copy
    /// # drop(shared);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`CollectError::Body`] when the body yields an error, [`CollectError::TooLarge`] when
    /// its size hint or the bytes it delivers pass `max`, [`CollectError::Pool`] when the
    /// pool refuses the buffer or a growth step (the tenant's hard limit, `max_live_bytes`,
    /// `max_request_bytes`, the allocator). Nothing is charged or kept on error.
    pub async fn collect_body<B>(
        &self,
        body: B,
        max: usize,
    ) -> Result<PooledBuf, CollectError<B::Error>>
    where
        B: Body,
        B::Data: Buf,
    {
        collect(self, body, max).await
    }

    /// [`collect_body`](Self::collect_body), waiting for room instead of refusing: the
    /// first buffer and every growth step wait, as [`Tenant::acquire_wait`] does, while the
    /// tenant's hard limit or the pool's `max_live_bytes` refuses and waiting can help.
    ///
    /// Meanwhile the body is not read, so its connection's flow control pushes back on the
    /// client: a tenant over its limit slows down instead of failing. Bound the wait with
    /// the server's timeout (`tokio::time::timeout`, tower's `TimeoutLayer`): dropped at
    /// any point, the future has charged nothing and kept nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(1 << 20));
    /// let earlier = tenant.acquire(1 << 20); // the tenant's whole limit, held
    ///
    /// let body = Full::new(Bytes::from(vec![7u8; 100_000]));
    /// let upload = tenant.collect_body_wait(body, 16 << 20);
    /// let (buf, ()) = tokio::join!(upload, async { drop(earlier) });
    /// assert_eq!(buf?.len(), 100_000); // waited for `earlier`, then read the body
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`collect_body`](Self::collect_body), except that a [`CollectError::Pool`] refusal
    /// is one waiting cannot fix ([`PoolError::waiting_helps`] is false).
    pub async fn collect_body_wait<B>(
        &self,
        body: B,
        max: usize,
    ) -> Result<PooledBuf, CollectError<B::Error>>
    where
        B: Body,
        B::Data: Buf,
    {
        collect(&Waiting(self), body, max).await
    }

    /// Reads a whole HTTP body into a [`PooledChain`] charged to this tenant, refusing
    /// bodies of more than `max` bytes: [`collect_body`](Self::collect_body) into pooled
    /// segments, charged what they hold (within 64 KiB of the body) instead of the class
    /// above it.
    ///
    /// A body with a size hint takes the segments for its lower bound before reading (an
    /// exact `Content-Length` of 3 MiB: three Large slabs); a chunked body takes them as
    /// frames arrive (Medium slabs, a Small one for a body of at most 4 KiB). Each byte is
    /// copied once, from the body's chunks into the segments, yielding after each MiB
    /// copied in one poll as `collect_body` does. So a 5 MiB body fits an 8 MiB hard
    /// limit, and a 64 MiB limit holds 21 bodies of 3 MiB at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(8 << 20));
    /// let body = Full::new(Bytes::from(vec![1u8; 5 << 20])); // 5 MiB, an exact size hint
    /// let chain = tenant.collect_body_chain(body, 16 << 20).await?;
    /// assert_eq!((chain.len(), chain.capacity()), (5 << 20, 5 << 20));
    /// let frozen = chain.freeze(); // a Bytes a segment, no copy
    /// assert_eq!(frozen.segments(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`collect_body`](Self::collect_body): [`CollectError::Body`],
    /// [`CollectError::TooLarge`], [`CollectError::Pool`] (whose
    /// [`waiting_helps`](PoolError::waiting_helps) says whether the whole chain can ever
    /// fit). Nothing is charged or kept on error.
    pub async fn collect_body_chain<B>(
        &self,
        body: B,
        max: usize,
    ) -> Result<PooledChain, CollectError<B::Error>>
    where
        B: Body,
        B::Data: Buf,
    {
        collect_chain(self, Now, body, max).await
    }

    /// [`collect_body_chain`](Self::collect_body_chain), waiting for room instead of
    /// refusing: each step waits its turn as [`Tenant::acquire_wait`] does, while the
    /// tenant's hard limit or the pool's `max_live_bytes` refuses and waiting can help. A
    /// body with a `Content-Length` waits once, for all of its segments, holding nothing
    /// while it waits.
    ///
    /// A chunked body waits while it holds segments; when only waiters hold the room they
    /// wait for (two bodies each holding half the tenant's limit), the youngest fails with
    /// [`PoolError::WaitDeadlock`] so the other goes on: waits never hang. Bound the wait
    /// with the server's timeout: dropped at any point, the future has charged nothing and
    /// kept nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(1 << 20));
    /// let earlier = tenant.acquire(1 << 20); // the tenant's whole limit, held
    ///
    /// let body = Full::new(Bytes::from(vec![7u8; 100_000]));
    /// let upload = tenant.collect_body_chain_wait(body, 16 << 20);
    /// let (chain, ()) = tokio::join!(upload, async { drop(earlier) });
    /// assert_eq!(chain?.len(), 100_000); // waited for `earlier`, then read the body
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`collect_body_chain`](Self::collect_body_chain), except that a
    /// [`CollectError::Pool`] refusal is one waiting cannot fix
    /// ([`PoolError::waiting_helps`] is false).
    pub async fn collect_body_chain_wait<B>(
        &self,
        body: B,
        max: usize,
    ) -> Result<PooledChain, CollectError<B::Error>>
    where
        B: Body,
        B::Data: Buf,
    {
        collect_chain(self, Wait, body, max).await
    }
}

impl BufferPool {
    /// Reads a whole HTTP body into one buffer charged to no tenant, refusing bodies of more
    /// than `max` bytes; [`Tenant::collect_body`] describes how.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    /// use bytes::Bytes;
    /// use futures_util::stream;
    /// use http_body::Frame;
    /// use http_body_util::StreamBody;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let pool = BufferPool::default();
    /// // A chunked body: no size hint, three frames.
    /// let frames = ["he", "llo", "!"].map(|s| Ok::<_, std::io::Error>(Frame::data(Bytes::from(s))));
    /// let buf = pool.collect_body(StreamBody::new(stream::iter(frames)), 1024).await?;
    /// assert_eq!(&buf[..], b"hello!");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Tenant::collect_body`], without a tenant's hard limit.
    pub async fn collect_body<B>(
        &self,
        body: B,
        max: usize,
    ) -> Result<PooledBuf, CollectError<B::Error>>
    where
        B: Body,
        B::Data: Buf,
    {
        collect(self, body, max).await
    }

    /// [`collect_body`](Self::collect_body), waiting for room while `max_live_bytes`
    /// refuses; [`Tenant::collect_body_wait`] describes how.
    ///
    /// # Errors
    ///
    /// As [`Tenant::collect_body_wait`].
    pub async fn collect_body_wait<B>(
        &self,
        body: B,
        max: usize,
    ) -> Result<PooledBuf, CollectError<B::Error>>
    where
        B: Body,
        B::Data: Buf,
    {
        collect(&Waiting(self), body, max).await
    }

    /// Reads a whole HTTP body into a [`PooledChain`] charged to no tenant;
    /// [`Tenant::collect_body_chain`] describes how.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    /// use bytes::Bytes;
    /// use futures_util::stream;
    /// use http_body::Frame;
    /// use http_body_util::StreamBody;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let pool = BufferPool::default();
    /// // A chunked body: no size hint, three frames.
    /// let frames = ["he", "llo", "!"].map(|s| Ok::<_, std::io::Error>(Frame::data(Bytes::from(s))));
    /// let chain = pool.collect_body_chain(StreamBody::new(stream::iter(frames)), 1024).await?;
    /// assert_eq!(chain.capacity(), 4096); // one Small slab
    /// assert_eq!(chain.freeze().to_bytes(), &b"hello!"[..]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Tenant::collect_body_chain`], without a tenant's hard limit.
    pub async fn collect_body_chain<B>(
        &self,
        body: B,
        max: usize,
    ) -> Result<PooledChain, CollectError<B::Error>>
    where
        B: Body,
        B::Data: Buf,
    {
        collect_chain(self, Now, body, max).await
    }

    /// [`collect_body_chain`](Self::collect_body_chain), waiting for room while
    /// `max_live_bytes` refuses; [`Tenant::collect_body_chain_wait`] describes how.
    ///
    /// # Errors
    ///
    /// As [`Tenant::collect_body_chain_wait`].
    pub async fn collect_body_chain_wait<B>(
        &self,
        body: B,
        max: usize,
    ) -> Result<PooledChain, CollectError<B::Error>>
    where
        B: Body,
        B::Data: Buf,
    {
        collect_chain(self, Wait, body, max).await
    }
}

/// Where the collect loop gets its memory: the first buffer, and room before each append.
/// The handles refuse at once; a waiting form waits instead, and the loop stays the same.
trait Room {
    /// A buffer of at least `bytes` bytes.
    fn first(&self, bytes: usize) -> impl Future<Output = Result<PooledBuf, PoolError>>;

    /// Room in `buf` for `additional` more bytes, growing it past `max` only if it must.
    fn make_room(
        &self,
        buf: &mut PooledBuf,
        additional: usize,
        max: usize,
    ) -> impl Future<Output = Result<(), PoolError>>;
}

impl Room for Tenant {
    fn first(&self, bytes: usize) -> impl Future<Output = Result<PooledBuf, PoolError>> {
        future::ready(self.try_acquire(bytes))
    }

    fn make_room(
        &self,
        buf: &mut PooledBuf,
        additional: usize,
        max: usize,
    ) -> impl Future<Output = Result<(), PoolError>> {
        future::ready(buf.try_reserve_within(additional, max))
    }
}

impl Room for BufferPool {
    fn first(&self, bytes: usize) -> impl Future<Output = Result<PooledBuf, PoolError>> {
        future::ready(self.try_acquire(bytes))
    }

    fn make_room(
        &self,
        buf: &mut PooledBuf,
        additional: usize,
        max: usize,
    ) -> impl Future<Output = Result<(), PoolError>> {
        future::ready(buf.try_reserve_within(additional, max))
    }
}

/// The waiting forms: the first buffer and every growth step wait for room while a limit
/// refuses and waiting can help.
struct Waiting<'a, H>(&'a H);

impl Room for Waiting<'_, Tenant> {
    fn first(&self, bytes: usize) -> impl Future<Output = Result<PooledBuf, PoolError>> {
        self.0.acquire_wait(bytes)
    }

    fn make_room(
        &self,
        buf: &mut PooledBuf,
        additional: usize,
        max: usize,
    ) -> impl Future<Output = Result<(), PoolError>> {
        buf.reserve_wait_within(additional, max)
    }
}

impl Room for Waiting<'_, BufferPool> {
    fn first(&self, bytes: usize) -> impl Future<Output = Result<PooledBuf, PoolError>> {
        self.0.acquire_wait(bytes)
    }

    fn make_room(
        &self,
        buf: &mut PooledBuf,
        additional: usize,
        max: usize,
    ) -> impl Future<Output = Result<(), PoolError>> {
        buf.reserve_wait_within(additional, max)
    }
}

/// The loop of `collect_body`, described in the module docs.
async fn collect<R, B>(room: &R, body: B, max: usize) -> Result<PooledBuf, CollectError<B::Error>>
where
    R: Room,
    B: Body,
{
    let lower = lower_bound(&body, max)?;
    // With a lower bound (an exact one in the common case) the first buffer is sized from
    // it; without one, from the first data chunk, so a body that fails first charges
    // nothing at all.
    let mut buf = match lower {
        0 => None,
        lower => Some(room.first(lower).await?),
    };
    let mut body = pin!(body);
    let mut intake = Intake::new(max);
    loop {
        match future::poll_fn(|cx| intake.fill(cx, body.as_mut(), &mut buf)).await? {
            Step::Done => break,
            Step::Room(len) => match &mut buf {
                Some(buf) => room.make_room(buf, len, max).await?,
                None => buf = Some(room.first(len).await?),
            },
        }
    }
    match buf {
        Some(buf) => Ok(buf),
        None => Ok(room.first(0).await?), // an empty body
    }
}

/// The size hint's lower bound, or `TooLarge` before anything is read when it passes `max`.
fn lower_bound<B: Body>(body: &B, max: usize) -> Result<usize, CollectError<B::Error>> {
    let lower = body.size_hint().lower();
    match usize::try_from(lower) {
        Ok(lower) if lower <= max => Ok(lower),
        _ => Err(CollectError::TooLarge {
            max,
            at_least: lower,
        }),
    }
}

/// What one call of [`Intake::fill`] ends with.
enum Step {
    /// The body has ended.
    Done,
    /// A data chunk of this many bytes waits for room (in [`Intake::pending`]).
    Room(usize),
}

/// Where the loop copies a body: a buffer (none before the first chunk of a body with no
/// size hint) or a chain.
trait Sink {
    /// Whether `additional` more bytes fit as it is: no memory to take, no limit to check.
    fn fits(&self, additional: usize) -> bool;

    /// Appends `data`, which [`fits`](Sink::fits).
    fn put(&mut self, data: &[u8]);
}

impl Sink for Option<PooledBuf> {
    fn fits(&self, additional: usize) -> bool {
        self.as_ref().is_some_and(|buf| buf.fits(additional))
    }

    fn put(&mut self, data: &[u8]) {
        // Within its capacity: never promotes, so never panics.
        self.as_mut().expect("fits").extend_from_slice(data);
    }
}

impl Sink for PooledChain {
    fn fits(&self, additional: usize) -> bool {
        PooledChain::fits(self, additional)
    }

    fn put(&mut self, data: &[u8]) {
        self.write_reserved(data); // room is made: takes no segment
    }
}

/// Bytes the collect loops copy in one poll before they hand the thread back to the
/// executor (waking their task first), as tokio's cooperative budget does for its own
/// resources. A body whose frames are all ready at once (an upload that waited for room
/// while its socket filled) would otherwise hold a worker thread for its whole copy while
/// other requests wait. 1 MiB is 50-200 µs of copying; the yield costs one more poll. In
/// `scripts/noisy.sh` (2026-12-07, 24 rounds) the guaranteed quiet tenant beside the
/// flood got 1.25x the requests/s it got without the yield; 256 KiB gave it no more (0.97x
/// what 1 MiB gave, 12 rounds). The task wakes itself, through whatever executor runs it:
/// a yield through `tokio::task::yield_now` (the worker polls its I/O driver first) gained
/// nothing there (1.05x, 90%: 0.76-1.49, 10 rounds) and hung a collect driven by another
/// executor on a tokio worker thread (`tests/body.rs`).
const YIELD_AFTER: usize = 1 << 20;

/// The copying half of the collect loops: frames are polled and copied in a plain
/// function, and the async loop around it awaits only to make room. With the copy inside
/// the async loop, a 64 KiB body with a length took 7-10% longer (`benches/chain.rs`,
/// 2026-12-07), although it never waited: the awaits for room, never taken, slowed the
/// copy loop itself.
struct Intake<D> {
    /// A chunk that did not fit, kept while room is made for it, or one that arrived
    /// after [`YIELD_AFTER`] bytes, kept over the yield.
    pending: Option<D>,
    /// Bytes of data received so far.
    received: usize,
    /// Bytes copied since [`Intake::fill`] last returned `Pending`.
    copied: usize,
    max: usize,
}

impl<D: Buf> Intake<D> {
    fn new(max: usize) -> Self {
        Intake {
            pending: None,
            received: 0,
            copied: 0,
            max,
        }
    }

    /// Copies data chunks into `sink` while they fit; trailers and empty chunks are
    /// skipped. `Pending` when the body is, or, its task woken, when more data arrives
    /// after [`YIELD_AFTER`] bytes copied since the last `Pending`.
    fn fill<B>(
        &mut self,
        cx: &mut Context<'_>,
        mut body: Pin<&mut B>,
        sink: &mut impl Sink,
    ) -> Poll<Result<Step, CollectError<B::Error>>>
    where
        B: Body<Data = D>,
    {
        loop {
            let mut data = match self.pending.take() {
                Some(data) => data,
                None => match body.as_mut().poll_frame(cx) {
                    Poll::Pending => {
                        self.copied = 0; // the thread goes back to the executor anyway
                        return Poll::Pending;
                    }
                    Poll::Ready(None) => return Poll::Ready(Ok(Step::Done)),
                    Poll::Ready(Some(Err(err))) => {
                        return Poll::Ready(Err(CollectError::Body(err)))
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        let Ok(data) = frame.into_data() else {
                            continue; // trailers: not part of the payload
                        };
                        let len = data.remaining();
                        if len == 0 {
                            continue;
                        }
                        self.received = self.received.saturating_add(len);
                        if self.received > self.max {
                            return Poll::Ready(Err(CollectError::TooLarge {
                                max: self.max,
                                at_least: self.received as u64,
                            }));
                        }
                        data
                    }
                },
            };
            if self.copied >= YIELD_AFTER {
                self.copied = 0;
                self.pending = Some(data);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let len = data.remaining();
            if !sink.fits(len) {
                self.pending = Some(data);
                return Poll::Ready(Ok(Step::Room(len)));
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                let taken = chunk.len();
                sink.put(chunk);
                data.advance(taken);
            }
            self.copied += len;
        }
    }
}

/// How a chain collector makes room, through its handle's `pool` and `tenant`: at once
/// (`Now`) or waiting (`Wait`).
trait ChainRoom {
    fn make_room(
        &self,
        chain: &mut PooledChain,
        pool: PoolRef,
        tenant: Option<AccountPtr>,
        additional: usize,
    ) -> impl Future<Output = Result<(), PoolError>>;
}

/// `collect_body_chain`: room at once or a refusal.
struct Now;

/// `collect_body_chain_wait`: each step (all of a known length at once) waits its turn.
struct Wait;

impl ChainRoom for Now {
    fn make_room(
        &self,
        chain: &mut PooledChain,
        pool: PoolRef,
        tenant: Option<AccountPtr>,
        additional: usize,
    ) -> impl Future<Output = Result<(), PoolError>> {
        future::ready(chain.try_reserve_as(pool, tenant, additional))
    }
}

impl ChainRoom for Wait {
    fn make_room(
        &self,
        chain: &mut PooledChain,
        pool: PoolRef,
        tenant: Option<AccountPtr>,
        additional: usize,
    ) -> impl Future<Output = Result<(), PoolError>> {
        chain.reserve_wait_as(pool, tenant, additional)
    }
}

/// The loop of `collect_body_chain`: the loop of `collect_body` into a chain, whose room
/// for the size hint's lower bound is made before the first frame.
///
/// The chain is [`lent`](PooledChain::lent): its steps are charged through `handle`, which
/// the caller holds throughout, and it keeps no handle of its own, only its first segment
/// (`chain.rs`, `Owner::First`). An empty body returns `handle`'s own empty chain.
async fn collect_chain<R, B, H>(
    handle: &H,
    room: R,
    body: B,
    max: usize,
) -> Result<PooledChain, CollectError<B::Error>>
where
    R: ChainRoom,
    B: Body,
    H: ChainHandle,
{
    let (pool, tenant) = handle.parts();
    let mut chain = PooledChain::lent(pool);
    let lower = lower_bound(&body, max)?;
    if lower > 0 {
        room.make_room(&mut chain, pool.clone(), tenant, lower)
            .await?;
    }
    let mut body = pin!(body);
    let mut intake = Intake::new(max);
    while let Step::Room(len) =
        future::poll_fn(|cx| intake.fill(cx, body.as_mut(), &mut chain)).await?
    {
        room.make_room(&mut chain, pool.clone(), tenant, len)
            .await?;
    }
    match chain.segments() {
        0 => Ok(handle.chain()),
        _ => Ok(chain),
    }
}

/// A handle a chain can be collected through: a [`Tenant`] or the [`BufferPool`].
trait ChainHandle {
    /// The pool and the account its chains are charged to.
    fn parts(&self) -> (&PoolRef, Option<AccountPtr>);
    /// An empty chain with a clone of this handle.
    fn chain(&self) -> PooledChain;
}

impl ChainHandle for Tenant {
    fn parts(&self) -> (&PoolRef, Option<AccountPtr>) {
        Tenant::parts(self)
    }
    fn chain(&self) -> PooledChain {
        Tenant::chain(self)
    }
}

impl ChainHandle for BufferPool {
    fn parts(&self) -> (&PoolRef, Option<AccountPtr>) {
        BufferPool::parts(self)
    }
    fn chain(&self) -> PooledChain {
        BufferPool::chain(self)
    }
}
