//! One class's free list: slabs of exactly the class's capacity, waiting for reuse.

/// Slabs waiting in one class, with the counters that change only together with the list.
///
/// `hits` and `returned` live under the same lock as the slabs, so counting them costs no
/// extra atomic operation on the hot path, and a snapshot sees them consistent with the list.
#[derive(Debug, Default)]
pub(crate) struct FreeList {
    pub(crate) slabs: Vec<Vec<u8>>,
    /// Slabs taken from this list for a buffer.
    pub(crate) hits: u64,
    /// Slabs put back on this list by a buffer that dropped or was promoted.
    pub(crate) returned: u64,
}

impl FreeList {
    pub(crate) fn with_capacity(slots: usize) -> Self {
        FreeList {
            // Reserved up front (bounded) so the return path rarely allocates.
            slabs: Vec::with_capacity(slots.min(1024)),
            hits: 0,
            returned: 0,
        }
    }
}
