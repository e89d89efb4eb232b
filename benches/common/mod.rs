//! Shared by every bench binary: the size classes, the source data and the criterion
//! configuration, so all groups run under the same settings.

// Each bench binary compiles this module on its own and uses a different subset of it.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;

pub(crate) const KIB: usize = 1024;
pub(crate) const MIB: usize = 1024 * KIB;

/// The four pooled size classes of axon-buffer, by the name the reports use.
pub(crate) const CLASSES: [(&str, usize); 4] = [
    ("small", 4 * KIB),
    ("medium", 64 * KIB),
    ("large", MIB),
    ("huge", 10 * MIB),
];

/// The default settings of every group, chosen so that the whole `cargo bench` stays
/// well under 15 minutes on a shared 2-core machine. Criterion's command-line flags
/// (`--sample-size`, `--measurement-time`, `--warm-up-time`) still override them, since
/// `criterion_group!` applies `configure_from_args` after this.
pub(crate) fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .noise_threshold(0.03)
}

/// `len` bytes of a non-trivial pattern, written once so its pages are resident: the
/// benches copy from it, the way a handler copies a payload it has just read.
pub(crate) fn source(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
