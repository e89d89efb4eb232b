//! The pool's knobs ([`Config`]), fixed at build time, and the defaults the builder
//! documents.

use std::time::Duration;

/// How long a slab may sit idle before the decay frees it, unless the builder says
/// otherwise. A freed Huge slab costs about 5 ms of page faults to fill again (4-6 ms
/// measured here for 10 MiB), so freeing one that is needed again costs at most 5 ms per
/// 20 s, 0.025% of a core; meanwhile a burst's memory leaves within 25 to 30 s (the decay
/// frees a slab idle the timeout plus one 5 s period, checked every period). (.NET's
/// ArrayPool trims after 60 s, jemalloc decays dirty pages over 10 s.)
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// The pool's knobs, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) default_tenant_soft_limit: u64,
    pub(crate) default_tenant_hard_limit: Option<u64>,
    pub(crate) max_idle_per_class: usize,
    pub(crate) max_idle_bytes: u64,
    pub(crate) max_tenants: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_live_bytes: Option<u64>,
    pub(crate) zero_on_release: bool,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) idle_decay_thread: bool,
    pub(crate) trim_allocator: bool,
    /// Track one buffer in this many; 0 is off.
    pub(crate) leak_sample_every: u32,
    pub(crate) leak_backtraces: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_tenant_soft_limit: 256 * 1024 * 1024,
            default_tenant_hard_limit: None,
            max_idle_per_class: 64,
            max_idle_bytes: 256 * 1024 * 1024,
            max_tenants: 10_000,
            max_request_bytes: 1024 * 1024 * 1024,
            max_live_bytes: None,
            zero_on_release: false,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            // Off under Miri only: Miri reports a thread still running at exit (the global
            // pool's would be), and it runs a test for minutes of real time, so the
            // thread's decay would race the figures a test checks. Tests of the thread ask
            // for it (`tests/decay.rs`).
            idle_decay_thread: !cfg!(miri),
            trim_allocator: true,
            leak_sample_every: 0,
            leak_backtraces: false,
        }
    }
}
