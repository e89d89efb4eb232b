//! Asymmetric fences: a light fence for the thread that works on its own cache thousands of
//! times a second, a heavy one for the rare thread (`trim`) that reaches into another
//! thread's cache.
//!
//! Together, one [`light`] on one side and one [`heavy`] on the other order the two
//! threads' accesses as a pair of `SeqCst` fences would (C++ proposal P1202; folly's
//! `asymmetricLightBarrier` / `asymmetricHeavyBarrier`). On Linux the light fence is a
//! compiler fence only, and the heavy one is the `membarrier(2)` system call with
//! `MEMBARRIER_CMD_PRIVATE_EXPEDITED`: the kernel interrupts every other running thread of
//! the process and makes it execute a full memory barrier, so every store a thread made
//! before that point is visible to the caller when the call returns, and every load it
//! makes after that point sees what the caller stored before the call. A thread that is
//! not running has passed a context switch, which is a full barrier too.
//!
//! Where the system call is missing or refused (other systems, old kernels, a seccomp
//! filter), both sides are `fence(SeqCst)`, and under Miri and loom they always are, so
//! the tools check the protocol with the fences the C++ memory model knows.
//!
//! The two crates that package this (`membarrier`, `swmr-barrier`) were not taken: the
//! first aborts the process when the call fails, the second answers a failed call with a
//! heavy-side fence only, which no longer pairs with a light side that has no fence. Here
//! a failed call makes [`heavy`] return `false`, and the caller leaves the other thread's
//! cache alone.

#[cfg(all(target_os = "linux", not(miri), not(axon_loom)))]
mod imp {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::atomic::{compiler_fence, fence, AtomicU8, Ordering::SeqCst};

    const UNKNOWN: u8 = 0;
    /// `membarrier` works: light is a compiler fence.
    const ASYMMETRIC: u8 = 1;
    /// It does not: both sides fence.
    const SYMMETRIC: u8 = 2;

    static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

    // From linux/membarrier.h.
    const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: membarrier(2) takes two integers and a cpu id, reads and writes no memory
        // of ours, and reports failure in its return value, which every caller checks.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_uint,
                0 as libc::c_int,
            )
        }
    }

    /// Decides the mode once (racing callers decide the same).
    #[cold]
    pub(crate) fn init() -> u8 {
        let mode = MODE.load(Relaxed);
        if mode != UNKNOWN {
            return mode;
        }
        let supported = membarrier(MEMBARRIER_CMD_QUERY);
        let needed = libc::c_long::from(
            MEMBARRIER_CMD_PRIVATE_EXPEDITED | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
        );
        let mode = if supported >= 0
            && supported & needed == needed
            && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
        {
            ASYMMETRIC
        } else {
            SYMMETRIC
        };
        MODE.store(mode, Relaxed);
        mode
    }

    /// `asymmetric` is what [`super::asymmetric`] said when the caller's magazine was
    /// made: a thread that saw UNKNOWN or SYMMETRIC fences for real, which pairs with
    /// either kind of heavy fence; only ASYMMETRIC (set after registering, never unset)
    /// relies on the call.
    #[inline(always)]
    pub(crate) fn light(asymmetric: bool) {
        if asymmetric {
            compiler_fence(SeqCst);
        } else {
            fence(SeqCst);
        }
    }

    pub(crate) fn asymmetric() -> bool {
        init() == ASYMMETRIC
    }

    pub(crate) fn heavy() -> bool {
        match init() {
            ASYMMETRIC => {
                // The call is itself a full barrier for the calling thread.
                let done = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0;
                compiler_fence(SeqCst);
                done
            }
            _ => {
                fence(SeqCst);
                true
            }
        }
    }

    #[cfg(all(test, not(axon_loom)))]
    pub(crate) fn is_asymmetric() -> bool {
        init() == ASYMMETRIC
    }
}

#[cfg(not(all(target_os = "linux", not(miri), not(axon_loom))))]
mod imp {
    #[cfg(axon_loom)]
    use loom::sync::atomic::{fence, Ordering::SeqCst};
    #[cfg(not(axon_loom))]
    use std::sync::atomic::{fence, Ordering::SeqCst};

    pub(crate) fn init() -> u8 {
        0
    }

    #[inline(always)]
    pub(crate) fn light(_asymmetric: bool) {
        fence(SeqCst);
    }

    pub(crate) fn asymmetric() -> bool {
        false
    }

    pub(crate) fn heavy() -> bool {
        fence(SeqCst);
        true
    }

    #[cfg(all(test, not(axon_loom)))]
    pub(crate) fn is_asymmetric() -> bool {
        false
    }
}

/// Decides, once per process, whether the fences are asymmetric. Called before a thread's
/// first cache is used, so the hot path finds the mode already set.
pub(crate) fn init() {
    imp::init();
}

/// The owner's side: orders its earlier stores before its later loads against a
/// concurrent [`heavy`]. `asymmetric` is what [`asymmetric`] returned before (the owner
/// keeps it, so the hot path reads no global).
#[inline(always)]
pub(crate) fn light(asymmetric: bool) {
    imp::light(asymmetric);
}

/// Whether the fences are asymmetric: decided once per process (see [`init`]) and never
/// changed after.
pub(crate) fn asymmetric() -> bool {
    imp::asymmetric()
}

/// The other side. `false` when the barrier could not be made (the system call failed
/// after working before): the caller must then not rely on it.
pub(crate) fn heavy() -> bool {
    imp::heavy()
}

#[cfg(all(test, not(axon_loom)))]
mod tests {
    #[test]
    fn heavy_succeeds_here() {
        super::init();
        assert!(super::heavy());
        super::light(super::asymmetric());
        #[cfg(all(target_os = "linux", not(miri)))]
        eprintln!("asymmetric fences: {}", super::imp::is_asymmetric());
    }
}
