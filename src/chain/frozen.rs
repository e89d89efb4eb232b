//! [`BytesChain`]: a frozen [`PooledChain`](crate::PooledChain), a `Bytes` a segment.

use bytes::{Buf, Bytes};
use std::fmt;
use std::io::IoSlice;

/// A payload as a sequence of [`Bytes`], one per segment of the
/// [`PooledChain`](crate::PooledChain) it was frozen from, over the same memory.
///
/// It is a [`Buf`]: read it, or hand it to `write_vectored` / tokio's `write_all_buf`,
/// whose [`chunks_vectored`](Buf::chunks_vectored) gives one `IoSlice` per segment, so
/// sending it copies nothing. Reading it advances past whole segments, whose `Bytes` drop
/// then. Clones share the segments; each slab returns to the pool, and its charge to the
/// tenant, when the last clone (or slice) of its `Bytes` drops, on whatever thread.
///
/// A chain is never made contiguous behind your back: [`to_bytes`](Self::to_bytes) copies,
/// only when there is more than one segment, and only when called.
///
/// # Examples
///
/// ```
/// use axon_buffer::BufferPool;
/// use bytes::Buf;
///
/// let pool = BufferPool::default();
/// let mut chain = pool.chain();
/// chain.try_extend_from_slice(b"head ")?;
/// chain.try_extend_from_slice(&[b'x'; 5000])?; // a second segment
/// let frozen = chain.freeze();
/// assert_eq!(frozen.segments(), 2);
/// assert_eq!(frozen.iter().map(|b| b.len()).sum::<usize>(), 5005);
///
/// let mut slices = [std::io::IoSlice::new(&[]); 4];
/// assert_eq!(frozen.chunks_vectored(&mut slices), 2); // one IoSlice a segment
///
/// let mut reader = frozen.clone();
/// assert_eq!(&reader.copy_to_bytes(4)[..], b"head"); // within a segment: no copy
/// assert_eq!(reader.remaining(), 5001);
/// # Ok::<(), axon_buffer::PoolError>(())
/// ```
#[derive(Clone, Default)]
pub struct BytesChain {
    /// The segments; those before `head` were read past (and are empty).
    segments: Vec<Bytes>,
    /// The first segment not read past; never an empty one while bytes remain.
    head: usize,
    /// Bytes not read yet, over all segments.
    len: usize,
}

impl BytesChain {
    /// A chain of non-empty segments holding `len` bytes in all.
    pub(crate) fn new(segments: Vec<Bytes>, len: usize) -> BytesChain {
        debug_assert_eq!(segments.iter().map(Bytes::len).sum::<usize>(), len);
        debug_assert!(segments.iter().all(|s| !s.is_empty()));
        BytesChain {
            segments,
            head: 0,
            len,
        }
    }

    /// Bytes not read yet, over all segments.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is left.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many segments are left (a partly read one counts).
    #[inline]
    pub fn segments(&self) -> usize {
        self.segments.len() - self.head
    }

    /// The segments left, in order: each a [`Bytes`] over its slab (no copy).
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::default();
    /// let mut chain = pool.chain();
    /// chain.try_reserve(3 << 20)?; // three Large segments
    /// chain.try_extend_from_slice(&vec![1; 3 << 20])?;
    /// let lens: Vec<usize> = chain.freeze().iter().map(|b| b.len()).collect();
    /// assert_eq!(lens, [1 << 20; 3]);
    /// # Ok::<(), axon_buffer::PoolError>(())
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Bytes> + '_ {
        self.segments[self.head..].iter()
    }

    /// The bytes left as one [`Bytes`]: the segment itself when one is left (no copy); a
    /// copy into one new allocation, outside the pool, when there are more. Nothing else in
    /// this crate copies a chain.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::default();
    /// let mut chain = pool.chain();
    /// chain.try_extend_from_slice(b"one segment")?;
    /// let frozen = chain.freeze();
    /// let whole = frozen.to_bytes();
    /// assert_eq!(whole.as_ptr(), frozen.iter().next().unwrap().as_ptr()); // no copy
    /// # Ok::<(), axon_buffer::PoolError>(())
    /// ```
    pub fn to_bytes(&self) -> Bytes {
        match self.segments() {
            0 => Bytes::new(),
            1 => self.segments[self.head].clone(),
            _ => {
                let mut whole = Vec::with_capacity(self.len);
                for segment in self.iter() {
                    whole.extend_from_slice(segment);
                }
                Bytes::from(whole)
            }
        }
    }
}

impl Buf for BytesChain {
    #[inline]
    fn remaining(&self) -> usize {
        self.len
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        self.segments.get(self.head).map_or(&[], |segment| segment)
    }

    /// # Panics
    ///
    /// When `cnt` is more than [`remaining`](Buf::remaining).
    fn advance(&mut self, mut cnt: usize) {
        assert!(
            cnt <= self.len,
            "advance({cnt}) past the {} bytes remaining",
            self.len
        );
        self.len -= cnt;
        while cnt > 0 {
            let segment = &mut self.segments[self.head];
            if cnt < segment.len() {
                segment.advance(cnt);
                return;
            }
            cnt -= segment.len();
            // Read past: its slab may go back now, if no clone holds it.
            *segment = Bytes::new();
            self.head += 1;
        }
    }

    /// One `IoSlice` per segment left, as many as `dst` holds.
    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, segment) in dst.iter_mut().zip(self.iter()) {
            *slot = IoSlice::new(segment);
            filled += 1;
        }
        filled
    }

    /// Within the first segment: a slice of it, no copy; across segments: one copy.
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        if let Some(segment) = self.segments.get(self.head) {
            if len < segment.len() {
                let out = segment.slice(..len);
                self.advance(len);
                return out;
            }
            if len == segment.len() {
                let out = segment.clone();
                self.advance(len);
                return out;
            }
        }
        assert!(
            len <= self.len,
            "copy_to_bytes({len}) past the {} bytes remaining",
            self.len
        );
        let mut out = Vec::with_capacity(len);
        let mut left = len;
        while left > 0 {
            let chunk = self.chunk();
            let now = chunk.len().min(left);
            out.extend_from_slice(&chunk[..now]);
            self.advance(now);
            left -= now;
        }
        Bytes::from(out)
    }
}

impl fmt::Debug for BytesChain {
    /// Shows the length and the segments left; never the contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytesChain")
            .field("len", &self.len)
            .field("segments", &self.segments())
            .finish_non_exhaustive()
    }
}

impl<'a> IntoIterator for &'a BytesChain {
    type Item = &'a Bytes;
    type IntoIter = std::slice::Iter<'a, Bytes>;

    fn into_iter(self) -> Self::IntoIter {
        self.segments[self.head..].iter()
    }
}

/// The segments not yet read past go back last to first, as a
/// [`PooledChain`](crate::PooledChain)'s do (`Segments`'s drop in `chain.rs` says why);
/// [`advance`](Buf::advance) gives back each one it reads past at once.
impl Drop for BytesChain {
    fn drop(&mut self) {
        while let Some(segment) = self.segments.pop() {
            drop(segment);
        }
    }
}
