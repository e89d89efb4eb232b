//! Size classes: the table every slab is filed under.

use std::fmt;

/// The size class of a buffer: which free list its slab comes from and returns to.
///
/// The four pooled classes hold slabs of exactly [`capacity`](PoolClass::capacity) bytes.
/// Requests above 10 MiB are [`Oversize`](PoolClass::Oversize): allocated to their exact
/// size and freed on drop, never pooled.
///
/// # Examples
///
/// ```
/// use axon_buffer::PoolClass;
///
/// assert_eq!(PoolClass::for_size(0), PoolClass::Small);
/// assert_eq!(PoolClass::for_size(4096), PoolClass::Small);
/// assert_eq!(PoolClass::for_size(4097), PoolClass::Medium);
/// assert_eq!(PoolClass::for_size(10 * 1024 * 1024 + 1), PoolClass::Oversize);
/// assert_eq!(PoolClass::Large.capacity(), 1024 * 1024);
/// assert_eq!(PoolClass::Huge.slug(), "huge");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PoolClass {
    /// Up to 4 KiB: text frames, headers, small messages.
    Small,
    /// Above 4 KiB, up to 64 KiB.
    Medium,
    /// Above 64 KiB, up to 1 MiB: typical images.
    Large,
    /// Above 1 MiB, up to 10 MiB: audio clips, large images.
    Huge,
    /// Above 10 MiB: allocated exactly, never pooled.
    Oversize,
}

impl PoolClass {
    /// Capacity of a slab of this class in bytes: 4 KiB, 64 KiB, 1 MiB, 10 MiB, and
    /// `usize::MAX` for [`Oversize`](PoolClass::Oversize) (which has no fixed capacity).
    #[inline]
    pub const fn capacity(self) -> usize {
        // A table rather than a match: one load, no jump table, on every acquire and drop.
        const CAPACITY: [usize; 5] = [
            4 * 1024,
            64 * 1024,
            1024 * 1024,
            10 * 1024 * 1024,
            usize::MAX,
        ];
        CAPACITY[self as usize]
    }

    /// The lowercase name used in metric labels: `"small"`, `"medium"`, `"large"`,
    /// `"huge"`, `"oversize"`.
    pub const fn slug(self) -> &'static str {
        match self {
            PoolClass::Small => "small",
            PoolClass::Medium => "medium",
            PoolClass::Large => "large",
            PoolClass::Huge => "huge",
            PoolClass::Oversize => "oversize",
        }
    }

    /// The smallest class whose capacity is at least `requested` (0 is Small).
    pub const fn for_size(requested: usize) -> PoolClass {
        if requested <= PoolClass::Small.capacity() {
            PoolClass::Small
        } else if requested <= PoolClass::Medium.capacity() {
            PoolClass::Medium
        } else if requested <= PoolClass::Large.capacity() {
            PoolClass::Large
        } else if requested <= PoolClass::Huge.capacity() {
            PoolClass::Huge
        } else {
            PoolClass::Oversize
        }
    }

    /// The four pooled classes, smallest first.
    pub const fn non_oversize() -> [PoolClass; 4] {
        [
            PoolClass::Small,
            PoolClass::Medium,
            PoolClass::Large,
            PoolClass::Huge,
        ]
    }

    /// All five classes, smallest first.
    pub const fn all() -> [PoolClass; 5] {
        [
            PoolClass::Small,
            PoolClass::Medium,
            PoolClass::Large,
            PoolClass::Huge,
            PoolClass::Oversize,
        ]
    }

    /// Index into per-class arrays (0..5, Oversize last).
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for PoolClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

#[cfg(test)]
mod tests {
    use super::PoolClass;

    #[test]
    fn index_matches_table_order() {
        for (i, class) in PoolClass::all().into_iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }
}
