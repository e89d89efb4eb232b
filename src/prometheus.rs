//! Prometheus export (feature `prometheus`): OpenMetrics text through the official
//! [`prometheus-client`](prometheus_client) crate.
//!
//! Two ways in:
//!
//! - [`PoolCollector`] implements prometheus-client's [`Collector`]. Register it in the
//!   [`Registry`] your service already has; each scrape takes one
//!   [`BufferPool::snapshot`] and encodes it, so all figures of one scrape come from the
//!   same moment.
//! - [`render`] gives the whole OpenMetrics exposition of one pool as a `String`
//!   (ending in `# EOF`), for a `/metrics` handler that serves nothing else, a log line or
//!   a test. Serve it with the content type [`CONTENT_TYPE`].
//!
//! # Metrics
//!
//! Counter families are named without `_total` in `# HELP` and `# TYPE`; their samples
//! end in `_total`, as OpenMetrics requires. Byte gauges carry `# UNIT ... bytes`.
//!
//! | sample | type | labels | meaning |
//! |---|---|---|---|
//! | `buffer_pool_hits_total` | counter | `class` | slabs taken from a free list or cache of this pool |
//! | `buffer_pool_misses_total` | counter | `class` | slabs freshly allocated for a pooled class |
//! | `buffer_pool_oversize_allocations_total` | counter | | Oversize buffers (above 10 MiB), never pooled |
//! | `buffer_pool_live_bytes` | gauge | | bytes held by outstanding buffers and reservations |
//! | `buffer_pool_reserved_bytes` | gauge | | the part of live bytes held by reservations |
//! | `buffer_pool_outstanding_buffers` | gauge | `class` | buffers (or frozen `Bytes`) not yet dropped |
//! | `buffer_pool_idle_slabs` | gauge | `class` | slabs waiting for reuse, wherever they wait |
//! | `buffer_pool_idle_bytes` | gauge | `class` | their capacity: idle slabs times the class capacity |
//! | `buffer_pool_discarded_total` | counter | `class` | slabs freed on return instead of pooled (a cap was full, or Oversize) |
//! | `buffer_pool_tenant_live_bytes` | gauge | `tenant_id` | bytes charged to each tenant |
//! | `buffer_pool_tenant_outstanding_buffers` | gauge | `tenant_id` | buffers (or frozen `Bytes`) each tenant has not yet dropped |
//! | `buffer_pool_soft_limit_exceeded_total` | counter | `tenant_id` | charges that left the tenant above its soft limit |
//! | `buffer_pool_hard_limit_refusals_total` | counter | `tenant_id` | charges refused by the tenant's hard limit |
//! | `buffer_pool_promotions_total` | counter | | buffers moved to a larger class by a write past their capacity |
//! | `buffer_pool_pool_limit_refusals_total` | counter | | charges refused by the pool-wide `max_live_bytes` |
//! | `buffer_pool_too_large_total` | counter | | requests refused as too large |
//! | `buffer_pool_alloc_failures_total` | counter | | allocations the allocator refused |
//! | `buffer_pool_decayed_slabs_total` | counter | `class` | slabs freed by the idle decay |
//! | `buffer_pool_decayed_bytes_total` | counter | `class` | their capacity |
//! | `buffer_pool_waiters` | gauge | | requests waiting for room now (`acquire_wait`, ...) |
//! | `buffer_pool_wait_seconds_total` | counter | | time requests have spent waiting for room, waits in progress included |
//! | `buffer_pool_tenant_waiters` | gauge | `tenant_id` | each tenant's requests waiting for room now |
//! | `buffer_pool_tenant_wait_seconds_total` | counter | `tenant_id` | time each tenant's requests have spent waiting, waits in progress included |
//! | `buffer_pool_tenant_hard_limit_bytes` | gauge | `tenant_id` | the hard limit of each tenant that has one |
//! | `buffer_pool_waits_abandoned_total` | counter | | waits dropped before they were served (a timeout) |
//! | `buffer_pool_tenant_waits_abandoned_total` | counter | `tenant_id` | each tenant's waits dropped before they were served |
//! | `buffer_pool_tenant_guarantee_bytes` | gauge | `tenant_id` | room under `max_live_bytes` set aside for each tenant that has a guarantee |
//!
//! `class` is one of `small`, `medium`, `large`, `huge` (and `oversize` for
//! `buffer_pool_outstanding_buffers`, or wherever the snapshot reports it); every pooled
//! class is always present, with 0 when nothing happened yet, so the set of series does
//! not change over a process's life.
//!
//! # Tenant ids as label values
//!
//! A tenant id is written as it is, whatever it contains: prometheus-client 0.25.2 and
//! later escape `\`, `"` and newline in label values (older versions wrote them raw and
//! broke the exposition). The number of tenant series is bounded by the pool's
//! `max_tenants`: ids past the bound are charged to the overflow tenant, which shows up
//! as one series of its own.
//!
//! # Examples
//!
//! ```
//! use axon_buffer::BufferPool;
//!
//! let pool = BufferPool::default();
//! let frame = pool.tenant("acme").acquire(1500);
//!
//! let text = axon_buffer::prometheus::render(&pool);
//! assert!(text.contains("# TYPE buffer_pool_hits counter\n"));
//! assert!(text.contains("buffer_pool_misses_total{class=\"small\"} 1\n"));
//! assert!(text.contains("buffer_pool_tenant_live_bytes{tenant_id=\"acme\"} 4096\n"));
//! assert!(text.ends_with("# EOF\n"));
//! drop(frame);
//! ```

use std::collections::HashMap;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::{BufferPool, BufferPoolSnapshot, PoolClass};

/// The `Content-Type` of the exposition [`render`] writes: OpenMetrics text 1.0.0 in UTF-8.
/// Prometheus asks for it in its scrape's `Accept` header and parses the body by it.
///
/// # Examples
///
/// ```
/// use axon_buffer::{prometheus, BufferPool};
///
/// // What a `/metrics` handler answers, with any HTTP server.
/// let pool = BufferPool::default();
/// let (content_type, body) = (prometheus::CONTENT_TYPE, prometheus::render(&pool));
/// assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"));
/// assert!(body.ends_with("# EOF\n"));
/// ```
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Exports a [`BufferPool`] to a prometheus-client [`Registry`].
///
/// Holds a clone of the pool handle (the pool lives as long as the registry does) and
/// takes one [`BufferPool::snapshot`] per scrape. The metric names are listed in the
/// [module documentation](self); a registry prefix
/// ([`Registry::sub_registry_with_prefix`]) is prepended to all of them.
///
/// # Examples
///
/// ```
/// use axon_buffer::BufferPool;
/// use axon_buffer::prometheus::PoolCollector;
/// use prometheus_client::encoding::text::encode;
/// use prometheus_client::registry::Registry;
///
/// # fn main() -> Result<(), std::fmt::Error> {
/// let pool = BufferPool::default();
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(PoolCollector::new(pool.clone())));
///
/// let image = pool.tenant("acme").acquire(200 * 1024);
/// let mut text = String::new();
/// encode(&mut text, &registry)?;
/// assert!(text.contains("buffer_pool_live_bytes 1048576\n"));
///
/// drop(image);
/// text.clear();
/// encode(&mut text, &registry)?;
/// assert!(text.contains("buffer_pool_live_bytes 0\n"));
/// assert!(text.contains("buffer_pool_hits_total{class=\"large\"} 0\n"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PoolCollector {
    pool: BufferPool,
}

impl PoolCollector {
    /// A collector for `pool` (a handle clone: the collector sees the same pool).
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    /// use axon_buffer::prometheus::PoolCollector;
    /// use prometheus_client::registry::Registry;
    ///
    /// let pool = BufferPool::default();
    /// let mut registry = Registry::default();
    /// registry
    ///     .sub_registry_with_prefix("ingest")
    ///     .register_collector(Box::new(PoolCollector::new(pool)));
    /// ```
    pub fn new(pool: BufferPool) -> Self {
        Self { pool }
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        encode_snapshot(&self.pool.snapshot(), &mut encoder)
    }
}

/// The OpenMetrics text exposition of `pool`: every metric of [`PoolCollector`], then
/// `# EOF`.
///
/// Builds a fresh [`Registry`] holding only this pool's collector. To export the pool
/// beside other metrics, register a [`PoolCollector`] in your own registry instead.
///
/// # Examples
///
/// ```
/// use axon_buffer::BufferPool;
///
/// let pool = BufferPool::default();
/// let tenant = pool.tenant("say \"hi\"\n");
/// let _reservation = tenant.reserve(1000);
///
/// let text = axon_buffer::prometheus::render(&pool);
/// assert!(text.contains("buffer_pool_reserved_bytes 1000\n"));
/// assert!(text.contains(r#"buffer_pool_tenant_live_bytes{tenant_id="say \"hi\"\n"} 1000"#));
/// ```
pub fn render(pool: &BufferPool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(PoolCollector::new(pool.clone())));
    let mut text = String::new();
    // Writing to a `String` cannot fail, and the collector raises no error of its own.
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("encoding OpenMetrics into a String never fails");
    text
}

fn encode_snapshot(s: &BufferPoolSnapshot, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
    use Kind::{Counter, Gauge};
    let pooled = PoolClass::non_oversize();
    let bytes = Some(&Unit::Bytes);

    by_class(
        e,
        Counter,
        "buffer_pool_hits",
        "Slabs taken from a free list or cache of this pool, by size class.",
        None,
        &pooled,
        s.pool_hits.iter().map(|(c, n)| (*c, *n)),
    )?;
    by_class(
        e,
        Counter,
        "buffer_pool_misses",
        "Slabs freshly allocated for a pooled size class.",
        None,
        &pooled,
        s.pool_misses.iter().map(|(c, n)| (*c, *n)),
    )?;
    single(
        e,
        Counter,
        "buffer_pool_oversize_allocations",
        "Oversize buffers (above 10 MiB) allocated exactly; they are never pooled.",
        None,
        s.oversize_allocations_total,
    )?;
    single(
        e,
        Gauge,
        "buffer_pool_live",
        "Bytes held by outstanding buffers and reservations, tenanted or not.",
        bytes,
        s.live_bytes,
    )?;
    single(
        e,
        Gauge,
        "buffer_pool_reserved",
        "The part of live bytes held by reservations (charged, no memory).",
        bytes,
        s.reserved_bytes,
    )?;
    by_class(
        e,
        Gauge,
        "buffer_pool_outstanding_buffers",
        "Buffers, or frozen Bytes sharing their slab, not yet dropped, by size class.",
        None,
        &PoolClass::all(),
        s.outstanding_buffers.iter().map(|(c, n)| (*c, *n)),
    )?;
    by_class(
        e,
        Gauge,
        "buffer_pool_idle_slabs",
        "Slabs waiting for reuse (free lists and thread caches), by size class.",
        None,
        &pooled,
        s.idle_slabs.iter().map(|(c, n)| (*c, *n)),
    )?;
    by_class(
        e,
        Gauge,
        "buffer_pool_idle",
        "Capacity of the idle slabs (idle slabs times the class capacity), by size class.",
        bytes,
        &pooled,
        s.idle_slabs
            .iter()
            .map(|(c, n)| (*c, n.saturating_mul(class_capacity(*c)))),
    )?;
    by_class(
        e,
        Counter,
        "buffer_pool_discarded",
        "Slabs freed on return instead of pooled: list or idle byte cap full, or Oversize.",
        None,
        &pooled,
        s.discarded_total.iter().map(|(c, n)| (*c, *n)),
    )?;
    by_tenant(
        e,
        Gauge,
        "buffer_pool_tenant_live",
        "Bytes charged to each tenant: capacity of its buffers plus its reservations.",
        bytes,
        &s.tenant_live_bytes,
    )?;
    by_tenant(
        e,
        Gauge,
        "buffer_pool_tenant_outstanding_buffers",
        "Buffers, or frozen Bytes sharing their slab, each tenant has not yet dropped.",
        None,
        &s.tenant_outstanding_buffers,
    )?;
    by_tenant(
        e,
        Counter,
        "buffer_pool_soft_limit_exceeded",
        "Charges that left the tenant's live bytes above its soft limit (never refused).",
        None,
        &s.tenant_soft_limit_exceeded_total,
    )?;
    by_tenant(
        e,
        Counter,
        "buffer_pool_hard_limit_refusals",
        "Charges refused because they would take the tenant above its hard limit.",
        None,
        &s.hard_limit_refusals_total,
    )?;
    single(
        e,
        Counter,
        "buffer_pool_promotions",
        "Buffers moved to a larger class by a write past their capacity.",
        None,
        s.promotions_total,
    )?;
    single(
        e,
        Counter,
        "buffer_pool_pool_limit_refusals",
        "Charges refused because they would take the pool above max_live_bytes.",
        None,
        s.pool_limit_refusals_total,
    )?;
    single(
        e,
        Counter,
        "buffer_pool_too_large",
        "Requests refused as too large (above max_request_bytes or overflowing).",
        None,
        s.too_large_total,
    )?;
    single(
        e,
        Counter,
        "buffer_pool_alloc_failures",
        "Allocations the allocator refused.",
        None,
        s.alloc_failures_total,
    )?;
    by_class(
        e,
        Counter,
        "buffer_pool_decayed_slabs",
        "Slabs freed by the idle decay (idle longer than idle_timeout), by size class.",
        None,
        &pooled,
        s.decayed_slabs_total.iter().map(|(c, n)| (*c, *n)),
    )?;
    by_class(
        e,
        Counter,
        "buffer_pool_decayed",
        "Capacity of the slabs freed by the idle decay, by size class.",
        bytes,
        &pooled,
        s.decayed_bytes_total.iter().map(|(c, n)| (*c, *n)),
    )?;
    single(
        e,
        Gauge,
        "buffer_pool_waiters",
        "Requests waiting for room now (acquire_wait, reserve_wait, collect_body_wait).",
        None,
        s.waiters,
    )?;
    let seconds = Some(&Unit::Seconds);
    let metric = e.encode_descriptor(
        "buffer_pool_wait",
        "Time requests have spent waiting for room, in all.",
        seconds,
        MetricType::Counter,
    )?;
    ConstCounter::new(s.wait_time_total.as_secs_f64()).encode(metric)?;
    by_tenant(
        e,
        Gauge,
        "buffer_pool_tenant_waiters",
        "Each tenant's requests waiting for room now.",
        None,
        &s.tenant_waiters,
    )?;
    let mut family = e.encode_descriptor(
        "buffer_pool_tenant_wait",
        "Time each tenant's requests have spent waiting for room, in all.",
        seconds,
        MetricType::Counter,
    )?;
    for (id, waited) in sorted(&s.tenant_wait_time_total) {
        let labels = [("tenant_id", id)];
        ConstCounter::new(waited.as_secs_f64()).encode(family.encode_family(&labels)?)?;
    }
    by_tenant(
        e,
        Gauge,
        "buffer_pool_tenant_hard_limit",
        "The hard limit of each tenant that has one.",
        bytes,
        &s.tenant_hard_limit_bytes,
    )?;
    single(
        e,
        Counter,
        "buffer_pool_waits_abandoned",
        "Waits whose future was dropped before they were served (a timeout, a client gone).",
        None,
        s.waits_abandoned_total,
    )?;
    by_tenant(
        e,
        Counter,
        "buffer_pool_tenant_waits_abandoned",
        "Each tenant's waits dropped before they were served.",
        None,
        &s.tenant_waits_abandoned_total,
    )?;
    by_tenant(
        e,
        Gauge,
        "buffer_pool_tenant_guarantee",
        "Room under max_live_bytes set aside for each tenant that has a guarantee.",
        bytes,
        &s.tenant_guarantee_bytes,
    )?;
    Ok(())
}

/// A tenant map's entries sorted by id, so scrapes are stable and diffable.
fn sorted<V: Copy>(values: &HashMap<String, V>) -> Vec<(&str, V)> {
    let mut sorted: Vec<(&str, V)> = values.iter().map(|(id, v)| (id.as_str(), *v)).collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    sorted
}

/// Counter or gauge: the only two types this module writes.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
        }
    }

    /// Writes one sample; prometheus-client appends `_total` to counters itself, which is
    /// why the family names above never end in `_total`.
    fn encode(
        self,
        value: u64,
        encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> fmt::Result {
        match self {
            Kind::Counter => ConstCounter::new(value).encode(encoder),
            Kind::Gauge => ConstGauge::new(value).encode(encoder),
        }
    }
}

/// A family with one unlabelled sample.
fn single(
    e: &mut DescriptorEncoder<'_>,
    kind: Kind,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    let metric = e.encode_descriptor(name, help, unit, kind.metric_type())?;
    kind.encode(value, metric)
}

/// A family labelled by `class`: every class of `always` (0 when the snapshot has no
/// entry), then any other class the snapshot reports, in class order.
fn by_class(
    e: &mut DescriptorEncoder<'_>,
    kind: Kind,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    always: &[PoolClass],
    values: impl Iterator<Item = (PoolClass, u64)>,
) -> fmt::Result {
    let values: HashMap<PoolClass, u64> = values.collect();
    let mut family = e.encode_descriptor(name, help, unit, kind.metric_type())?;
    for class in PoolClass::all() {
        let value = match values.get(&class) {
            Some(v) => *v,
            None if always.contains(&class) => 0,
            None => continue,
        };
        let labels = [("class", class.slug())];
        kind.encode(value, family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family labelled by `tenant_id`, sorted by id so scrapes are stable and diffable.
fn by_tenant(
    e: &mut DescriptorEncoder<'_>,
    kind: Kind,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: &HashMap<String, u64>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, unit, kind.metric_type())?;
    for (id, value) in sorted(values) {
        let labels = [("tenant_id", id)];
        kind.encode(value, family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A pooled class's capacity as `u64`; Oversize slabs are never idle, so its
/// `usize::MAX` never reaches the multiplication above in practice (and saturates if it
/// did).
fn class_capacity(class: PoolClass) -> u64 {
    u64::try_from(class.capacity()).unwrap_or(u64::MAX)
}
