//! The Prometheus export read back by real parsers.
//!
//! The pure-Rust tests check the shape of the text (HELP, TYPE, `# EOF`, values, unique
//! series, label escaping). `python_openmetrics_parser_reads_back_the_snapshot` hands the
//! text and a JSON dump of the same snapshot to `scripts/check_openmetrics.py`, which runs
//! the strict OpenMetrics parser of the Python `prometheus_client` package and compares
//! every value and every tenant id. It needs `AXON_PROM_PYTHON` (a Python with
//! `prometheus_client`), so it is `#[ignore]`d in a plain `cargo test`;
//! `scripts/prom-python-check.sh` (run by `.ci/run`) sets one up and runs it.
#![cfg(feature = "prometheus")]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use axon_buffer::prometheus::{render, PoolCollector};
use axon_buffer::{
    BufferPool, BufferPoolSnapshot, PoolClass, PooledBuf, Reservation, Tenant, MAX_TENANT_ID_LEN,
    OVERFLOW_TENANT_ID,
};

/// Ids a hostile or careless client could send: every character OpenMetrics escapes,
/// characters it does not, and strings that look like exposition syntax.
const HOSTILE_IDS: &[&str] = &[
    "plain",
    "back\\slash",
    "ends with backslash\\",
    "\\",
    "quote\"d",
    "\"",
    "\\\"",
    "new\nline",
    "\n",
    "two\n\nnewlines\\n",
    "carriage\rreturn",
    "tab\there",
    "ünïcødé 租户 🦀",
    "with spaces",
    "  ",
    "",
    "a\"} 1\n# EOF\n",
    "tenant_id=\"x\",class=\"small\"",
    "{braces},commas=equals",
    "#",
];

/// What the tests keep alive while they render: buffers and reservations.
struct Workload {
    pool: BufferPool,
    tenants: Vec<Tenant>,
    _held: Vec<PooledBuf>,
    _reservations: Vec<Reservation>,
}

/// A pool with every hostile id charged, some buffers returned (idle, hits), some held
/// (live), a reservation, an Oversize buffer and soft-limit excesses.
fn hostile_workload() -> Workload {
    let pool = BufferPool::builder()
        .default_tenant_soft_limit(64 * 1024)
        .max_tenants(10_000)
        .build();
    let mut tenants = Vec::new();
    let mut held = Vec::new();
    let mut reservations = Vec::new();
    for (i, id) in HOSTILE_IDS.iter().enumerate() {
        let tenant = pool.tenant(id);
        // Returned at once: idle slabs, and hits for the next tenant.
        drop(tenant.acquire(100 + i));
        drop(tenant.acquire(8 * 1024));
        // Held: live bytes per tenant; every third one goes past its 64 KiB soft limit.
        held.push(tenant.acquire(1000));
        if i % 3 == 0 {
            held.push(tenant.acquire(200 * 1024));
        }
        if i % 4 == 1 {
            reservations.push(tenant.reserve(1000 + i as u64));
        }
        if i % 5 == 2 {
            // Recorded (no max_live_bytes to protect), exported under the hostile id.
            tenant.set_guarantee(Some(4096 + i as u64)).unwrap();
        }
        tenants.push(tenant);
    }
    // Past MAX_TENANT_ID_LEN, and the reserved id itself: both charge the overflow tenant,
    // one series however many such ids arrive.
    for id in [
        "x".repeat(MAX_TENANT_ID_LEN + 1),
        "y\n".repeat(MAX_TENANT_ID_LEN),
        OVERFLOW_TENANT_ID.to_owned(),
    ] {
        let tenant = pool.tenant(&id);
        assert!(
            tenant.is_overflow(),
            "{id:?} should go to the overflow tenant"
        );
        held.push(tenant.acquire(10));
        tenants.push(tenant);
    }
    // A buffer that grows past its class: a promotion.
    let mut grown = pool.tenant("plain").acquire(10);
    grown.extend_from_slice(&[7; 5000]);
    held.push(grown);
    // Untenanted buffers count in the pool figures only.
    held.push(pool.acquire(2 * 1024 * 1024));
    drop(pool.acquire(11 * 1024 * 1024));
    Workload {
        pool,
        tenants,
        _held: held,
        _reservations: reservations,
    }
}

/// One sample line: the series (name and labels as written) and its value.
struct Sample<'a> {
    series: &'a str,
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Splits the exposition into sample lines; comments and `# EOF` are skipped.
fn samples(text: &str) -> Vec<Sample<'_>> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample line without a value: {line:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("value is not a number: {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed label set: {line:?}"));
                    (name, parse_labels(body))
                }
                None => (series, Vec::new()),
            };
            Sample {
                series,
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// Parses `k="v",k2="v2"` with OpenMetrics escapes (`\\`, `\"`, `\n`), independently of
/// prometheus-client, so a wrong escape shows up as a different id.
fn parse_labels(body: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label without =\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("dangling backslash").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => panic!("invalid escape \\{other} in {body:?}"),
                },
                (_, c) => {
                    assert_ne!(c, '\n', "raw newline in a label value");
                    value.push(c);
                }
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

/// The value of an integer series (every byte, slab and count is one).
fn value_of(text: &str, series: &str) -> u64 {
    let value = seconds_of(text, series);
    assert_eq!(value.fract(), 0.0, "{series} is not an integer: {value}");
    value as u64
}

/// The value of any series, as written (the `_seconds` counters are fractional).
fn seconds_of(text: &str, series: &str) -> f64 {
    samples(text)
        .into_iter()
        .find(|s| s.series == series)
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .value
}

/// (family name in HELP/TYPE, type, sample name) for every metric of the contract.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("buffer_pool_hits", "counter", "buffer_pool_hits_total"),
    ("buffer_pool_misses", "counter", "buffer_pool_misses_total"),
    (
        "buffer_pool_oversize_allocations",
        "counter",
        "buffer_pool_oversize_allocations_total",
    ),
    ("buffer_pool_live_bytes", "gauge", "buffer_pool_live_bytes"),
    (
        "buffer_pool_reserved_bytes",
        "gauge",
        "buffer_pool_reserved_bytes",
    ),
    (
        "buffer_pool_outstanding_buffers",
        "gauge",
        "buffer_pool_outstanding_buffers",
    ),
    ("buffer_pool_idle_slabs", "gauge", "buffer_pool_idle_slabs"),
    ("buffer_pool_idle_bytes", "gauge", "buffer_pool_idle_bytes"),
    (
        "buffer_pool_discarded",
        "counter",
        "buffer_pool_discarded_total",
    ),
    (
        "buffer_pool_tenant_live_bytes",
        "gauge",
        "buffer_pool_tenant_live_bytes",
    ),
    (
        "buffer_pool_tenant_outstanding_buffers",
        "gauge",
        "buffer_pool_tenant_outstanding_buffers",
    ),
    (
        "buffer_pool_soft_limit_exceeded",
        "counter",
        "buffer_pool_soft_limit_exceeded_total",
    ),
    (
        "buffer_pool_hard_limit_refusals",
        "counter",
        "buffer_pool_hard_limit_refusals_total",
    ),
    (
        "buffer_pool_promotions",
        "counter",
        "buffer_pool_promotions_total",
    ),
    (
        "buffer_pool_pool_limit_refusals",
        "counter",
        "buffer_pool_pool_limit_refusals_total",
    ),
    (
        "buffer_pool_too_large",
        "counter",
        "buffer_pool_too_large_total",
    ),
    (
        "buffer_pool_alloc_failures",
        "counter",
        "buffer_pool_alloc_failures_total",
    ),
    (
        "buffer_pool_decayed_slabs",
        "counter",
        "buffer_pool_decayed_slabs_total",
    ),
    (
        "buffer_pool_decayed_bytes",
        "counter",
        "buffer_pool_decayed_bytes_total",
    ),
    ("buffer_pool_waiters", "gauge", "buffer_pool_waiters"),
    (
        "buffer_pool_wait_seconds",
        "counter",
        "buffer_pool_wait_seconds_total",
    ),
    (
        "buffer_pool_tenant_waiters",
        "gauge",
        "buffer_pool_tenant_waiters",
    ),
    (
        "buffer_pool_tenant_wait_seconds",
        "counter",
        "buffer_pool_tenant_wait_seconds_total",
    ),
    (
        "buffer_pool_tenant_hard_limit_bytes",
        "gauge",
        "buffer_pool_tenant_hard_limit_bytes",
    ),
    (
        "buffer_pool_waits_abandoned",
        "counter",
        "buffer_pool_waits_abandoned_total",
    ),
    (
        "buffer_pool_tenant_waits_abandoned",
        "counter",
        "buffer_pool_tenant_waits_abandoned_total",
    ),
    (
        "buffer_pool_tenant_guarantee_bytes",
        "gauge",
        "buffer_pool_tenant_guarantee_bytes",
    ),
];

#[test]
fn render_has_help_type_every_family_and_eof() {
    let pool = BufferPool::default();
    let text = render(&pool);
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    for (family, kind, sample) in FAMILIES {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "no TYPE {kind} for {family}:\n{text}"
        );
        if family.ends_with("_bytes") {
            assert!(text.contains(&format!("# UNIT {family} bytes\n")));
        }
        if family.ends_with("_seconds") {
            assert!(text.contains(&format!("# UNIT {family} seconds\n")));
        }
        assert!(
            !family.ends_with("_total") && (*kind != "counter" || sample.ends_with("_total")),
            "counter family {family} must be named without _total, its samples with it"
        );
    }
    // No family other than the contract's, and no `_total_total`.
    let declared: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let expected: HashSet<&str> = FAMILIES.iter().map(|f| f.0).collect();
    assert_eq!(declared, expected);
    assert!(!text.contains("_total_total"));
    // A fresh pool: every pooled class is present with 0, so the series never change.
    for class in PoolClass::non_oversize() {
        for name in [
            "buffer_pool_hits_total",
            "buffer_pool_misses_total",
            "buffer_pool_idle_slabs",
            "buffer_pool_idle_bytes",
            "buffer_pool_discarded_total",
        ] {
            assert_eq!(
                value_of(&text, &format!("{name}{{class=\"{}\"}}", class.slug())),
                0
            );
        }
    }
    for class in PoolClass::non_oversize()
        .into_iter()
        .chain([PoolClass::Oversize])
    {
        let series = format!(
            "buffer_pool_outstanding_buffers{{class=\"{}\"}}",
            class.slug()
        );
        assert_eq!(value_of(&text, &series), 0);
    }
    assert_eq!(value_of(&text, "buffer_pool_live_bytes"), 0);
    assert_eq!(value_of(&text, "buffer_pool_oversize_allocations_total"), 0);
}

#[test]
fn render_values_follow_the_pool() {
    let pool = BufferPool::builder()
        .default_tenant_soft_limit(1024 * 1024)
        .build();
    let acme = pool.tenant("acme");
    let text_frame = acme.acquire(1000);
    drop(acme.acquire(200 * 1024));
    let image = acme.acquire(200 * 1024); // the Large slab just returned: a hit
    let video = acme.acquire(12 * 1024 * 1024); // Oversize, exactly 12 MiB
    let reservation = pool.tenant("globex").reserve(5000);

    let text = render(&pool);
    let small = 4096;
    let large = 1024 * 1024;
    let oversize = 12 * 1024 * 1024;
    assert_eq!(
        value_of(&text, "buffer_pool_misses_total{class=\"small\"}"),
        1
    );
    assert_eq!(
        value_of(&text, "buffer_pool_misses_total{class=\"large\"}"),
        1
    );
    assert_eq!(
        value_of(&text, "buffer_pool_hits_total{class=\"large\"}"),
        1
    );
    assert_eq!(value_of(&text, "buffer_pool_oversize_allocations_total"), 1);
    assert_eq!(
        value_of(&text, "buffer_pool_tenant_live_bytes{tenant_id=\"acme\"}"),
        small + large + oversize
    );
    assert_eq!(
        value_of(&text, "buffer_pool_tenant_live_bytes{tenant_id=\"globex\"}"),
        5000
    );
    assert_eq!(
        value_of(&text, "buffer_pool_live_bytes"),
        small + large + oversize + 5000
    );
    assert_eq!(value_of(&text, "buffer_pool_reserved_bytes"), 5000);
    // The 12 MiB buffer took acme above its 1 MiB soft limit.
    assert!(
        value_of(
            &text,
            "buffer_pool_soft_limit_exceeded_total{tenant_id=\"acme\"}"
        ) >= 1
    );
    assert_eq!(
        value_of(&text, "buffer_pool_outstanding_buffers{class=\"oversize\"}"),
        1
    );

    drop((text_frame, image, video, reservation));
    let text = render(&pool);
    assert_eq!(value_of(&text, "buffer_pool_live_bytes"), 0);
    assert_eq!(
        value_of(&text, "buffer_pool_tenant_live_bytes{tenant_id=\"acme\"}"),
        0
    );
    assert_eq!(
        value_of(&text, "buffer_pool_idle_slabs{class=\"small\"}"),
        1
    );
    assert_eq!(
        value_of(&text, "buffer_pool_idle_slabs{class=\"large\"}"),
        1
    );
    assert_eq!(
        value_of(&text, "buffer_pool_idle_bytes{class=\"large\"}"),
        large
    );
    for class in PoolClass::non_oversize()
        .into_iter()
        .chain([PoolClass::Oversize])
    {
        let series = format!(
            "buffer_pool_outstanding_buffers{{class=\"{}\"}}",
            class.slug()
        );
        assert_eq!(value_of(&text, &series), 0, "{series}");
    }
}

#[test]
fn collector_registers_in_a_user_registry_with_a_prefix() {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    let pool = BufferPool::default();
    let mut registry = Registry::default();
    registry
        .sub_registry_with_prefix("ingest")
        .register_collector(Box::new(PoolCollector::new(pool.clone())));
    let _buf = pool.tenant("acme").acquire(10);

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(text.contains("# TYPE ingest_buffer_pool_hits counter\n"));
    assert_eq!(
        value_of(
            &text,
            "ingest_buffer_pool_tenant_live_bytes{tenant_id=\"acme\"}"
        ),
        4096
    );
    assert!(samples(&text)
        .iter()
        .all(|s| s.name.starts_with("ingest_buffer_pool_")));
}

#[test]
fn hostile_tenant_ids_read_back_exactly_and_series_are_unique() {
    let work = hostile_workload();
    let snapshot = work.pool.snapshot();
    let text = render(&work.pool);
    maybe_dump(&text);

    let samples = samples(&text);
    let mut seen = HashSet::new();
    for s in &samples {
        assert!(seen.insert(s.series), "duplicate series {:?}", s.series);
        assert!(s.name.starts_with("buffer_pool_"), "{:?}", s.series);
    }
    assert!(text.ends_with("# EOF\n"));
    // `# EOF` inside an id must stay inside its label value.
    assert_eq!(text.lines().filter(|l| *l == "# EOF").count(), 1);

    // Every tenant family holds exactly the snapshot's tenants, each with its value.
    for (sample_name, expected) in [
        ("buffer_pool_tenant_live_bytes", &snapshot.tenant_live_bytes),
        (
            "buffer_pool_tenant_outstanding_buffers",
            &snapshot.tenant_outstanding_buffers,
        ),
        (
            "buffer_pool_soft_limit_exceeded_total",
            &snapshot.tenant_soft_limit_exceeded_total,
        ),
        (
            "buffer_pool_hard_limit_refusals_total",
            &snapshot.hard_limit_refusals_total,
        ),
    ] {
        let got: HashMap<String, u64> = samples
            .iter()
            .filter(|s| s.name == sample_name)
            .map(|s| {
                assert_eq!(s.labels.len(), 1, "{:?}", s.series);
                assert_eq!(s.labels[0].0, "tenant_id");
                (s.labels[0].1.clone(), s.value as u64)
            })
            .collect();
        assert_eq!(&got, expected, "{sample_name}");
    }

    // Every id reads back unchanged, unless the pool sent it to the overflow tenant.
    for (id, tenant) in HOSTILE_IDS.iter().zip(&work.tenants) {
        if tenant.is_overflow() {
            continue;
        }
        assert_eq!(tenant.id(), *id, "the pool changed a tenant id it kept");
        let series = samples
            .iter()
            .find(|s| s.name == "buffer_pool_tenant_live_bytes" && s.labels[0].1 == *id);
        assert!(
            series.is_some(),
            "id {id:?} does not read back from:\n{text}"
        );
    }
    for tenant in &work.tenants {
        assert!(
            snapshot.tenant_live_bytes.contains_key(tenant.id()),
            "tenant {:?} missing from the snapshot",
            tenant.id()
        );
    }
    // Long ids did not become series of their own.
    assert!(snapshot.tenant_live_bytes.contains_key(OVERFLOW_TENANT_ID));
    for s in &samples {
        for (_, value) in &s.labels {
            assert!(value.len() <= MAX_TENANT_ID_LEN, "{:?}", s.series);
        }
    }
    let idle_sum: u64 = samples
        .iter()
        .filter(|s| s.name == "buffer_pool_idle_bytes")
        .map(|s| s.value as u64)
        .sum();
    assert_eq!(
        idle_sum, snapshot.idle_bytes,
        "idle bytes by class must sum to idle_bytes"
    );
}

/// The figures of waiting, the idle decay and hard limits, as exported.
#[test]
fn waiting_decay_and_hard_limits_are_exported() {
    use std::future::Future;
    use std::task::{Context, Waker};
    use std::time::Duration;

    let pool = BufferPool::builder()
        .idle_timeout(Some(Duration::from_millis(10)))
        .build();
    let acme = pool.tenant("acme");
    acme.set_hard_limit(Some(4096));
    let held = acme.acquire(1);
    let mut waiting = Box::pin(acme.acquire_wait(1));
    let poll = waiting
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(poll.is_pending());
    drop(pool.acquire(1 << 20)); // an idle Large slab, for the decay
    let text = render(&pool);
    assert_eq!(value_of(&text, "buffer_pool_waiters"), 1);
    assert_eq!(
        value_of(&text, "buffer_pool_tenant_waiters{tenant_id=\"acme\"}"),
        1
    );
    assert_eq!(
        value_of(
            &text,
            "buffer_pool_tenant_hard_limit_bytes{tenant_id=\"acme\"}"
        ),
        4096
    );
    // A wait in progress counts its time so far.
    assert!(seconds_of(&text, "buffer_pool_wait_seconds_total") > 0.0);

    std::thread::sleep(Duration::from_millis(5));
    drop(held); // serves the waiter
    drop(waiting); // ... which gives its buffer back untaken
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(12));
        pool.trim_idle();
    }
    let text = render(&pool);
    assert_eq!(value_of(&text, "buffer_pool_waiters"), 0);
    let waited = seconds_of(
        &text,
        "buffer_pool_tenant_wait_seconds_total{tenant_id=\"acme\"}",
    );
    assert!(waited >= 0.005, "acme waited {waited} s");
    assert_eq!(seconds_of(&text, "buffer_pool_wait_seconds_total"), waited);
    assert_eq!(
        value_of(&text, "buffer_pool_decayed_slabs_total{class=\"large\"}"),
        1
    );
    assert_eq!(
        value_of(&text, "buffer_pool_decayed_bytes_total{class=\"large\"}"),
        1 << 20
    );
    assert_eq!(
        value_of(&text, "buffer_pool_decayed_slabs_total{class=\"small\"}"),
        1,
        "the waiter's slab, idle since"
    );
    assert_eq!(value_of(&text, "buffer_pool_waits_abandoned_total"), 0);

    // A wait given up before it was served, and a guarantee.
    let budget = BufferPool::builder().max_live_bytes(1 << 20).build();
    let quiet = budget.tenant("quiet");
    quiet.set_guarantee(Some(256 * 1024)).unwrap();
    let t = budget.tenant("t");
    let held: Vec<_> = (0..12).map(|_| t.acquire(64 * 1024)).collect();
    let mut gave_up = Box::pin(t.acquire_wait(64 * 1024));
    assert!(gave_up
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending());
    drop(gave_up);
    let text = render(&budget);
    assert_eq!(value_of(&text, "buffer_pool_waits_abandoned_total"), 1);
    assert_eq!(
        value_of(
            &text,
            "buffer_pool_tenant_waits_abandoned_total{tenant_id=\"t\"}"
        ),
        1
    );
    assert_eq!(
        value_of(
            &text,
            "buffer_pool_tenant_guarantee_bytes{tenant_id=\"quiet\"}"
        ),
        256 * 1024
    );
    drop(held);
}

#[test]
#[ignore = "needs a Python with prometheus_client in AXON_PROM_PYTHON: scripts/prom-python-check.sh runs it"]
fn python_openmetrics_parser_reads_back_the_snapshot() {
    let python = std::env::var_os("AXON_PROM_PYTHON").unwrap_or_else(|| {
        panic!(
            "AXON_PROM_PYTHON is not set. This test runs the strict OpenMetrics parser of the \
             Python prometheus_client package. Run `scripts/prom-python-check.sh`, which \
             creates target/prom-venv and runs this test, or set it up by hand:\n  \
             python3 -m venv target/prom-venv && target/prom-venv/bin/pip install prometheus_client\n  \
             AXON_PROM_PYTHON=$PWD/target/prom-venv/bin/python cargo test --features prometheus --test prometheus"
        )
    });
    let work = hostile_workload();
    // One snapshot for both files: nothing changes the pool in between.
    let snapshot = work.pool.snapshot();
    let text = render(&work.pool);
    assert_eq!(
        snapshot,
        work.pool.snapshot(),
        "the pool changed while rendering"
    );

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let stem = format!("prometheus-{}", std::process::id());
    let text_path = dir.join(format!("{stem}.txt"));
    let json_path = dir.join(format!("{stem}.json"));
    std::fs::write(&text_path, &text).unwrap();
    std::fs::write(&json_path, snapshot_json(&snapshot)).unwrap();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check_openmetrics.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&text_path)
        .arg(&json_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python:?} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "check_openmetrics.py rejected the exposition ({}):\n{stdout}\n{stderr}\nfiles kept: {} {}",
        output.status,
        text_path.display(),
        json_path.display()
    );
    println!("{stdout}");
    let _ = std::fs::remove_file(text_path);
    let _ = std::fs::remove_file(json_path);
}

/// Writes the hostile exposition where `AXON_PROM_DUMP` says, for
/// `scripts/promtool-check.sh`.
fn maybe_dump(text: &str) {
    if let Some(path) = std::env::var_os("AXON_PROM_DUMP") {
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
    }
}

/// The snapshot as JSON, written by hand (no serde in this crate): class maps keyed by
/// slug, tenant maps keyed by id.
fn snapshot_json(s: &BufferPoolSnapshot) -> String {
    fn classes(map: &HashMap<PoolClass, u64>) -> String {
        map_json(map.iter().map(|(c, v)| (c.slug().to_owned(), *v)))
    }
    fn tenants(map: &HashMap<String, u64>) -> String {
        map_json(map.iter().map(|(id, v)| (id.clone(), *v)))
    }
    let fields = [
        ("pool_hits", classes(&s.pool_hits)),
        ("pool_misses", classes(&s.pool_misses)),
        (
            "oversize_allocations_total",
            s.oversize_allocations_total.to_string(),
        ),
        ("live_bytes", s.live_bytes.to_string()),
        ("tenant_live_bytes", tenants(&s.tenant_live_bytes)),
        (
            "tenant_soft_limit_exceeded_total",
            tenants(&s.tenant_soft_limit_exceeded_total),
        ),
        ("idle_slabs", classes(&s.idle_slabs)),
        ("idle_bytes", s.idle_bytes.to_string()),
        ("reserved_bytes", s.reserved_bytes.to_string()),
        (
            "hard_limit_refusals_total",
            tenants(&s.hard_limit_refusals_total),
        ),
        ("alloc_failures_total", s.alloc_failures_total.to_string()),
        ("discarded_total", classes(&s.discarded_total)),
        (
            "pool_limit_refusals_total",
            s.pool_limit_refusals_total.to_string(),
        ),
        ("too_large_total", s.too_large_total.to_string()),
        ("outstanding_buffers", classes(&s.outstanding_buffers)),
        ("promotions_total", s.promotions_total.to_string()),
        (
            "tenant_outstanding_buffers",
            tenants(&s.tenant_outstanding_buffers),
        ),
        ("decayed_slabs_total", classes(&s.decayed_slabs_total)),
        ("decayed_bytes_total", classes(&s.decayed_bytes_total)),
        ("waiters", s.waiters.to_string()),
        ("wait_seconds_total", seconds(s.wait_time_total)),
        ("tenant_waiters", tenants(&s.tenant_waiters)),
        (
            "tenant_wait_seconds_total",
            format!(
                "{{{}}}",
                s.tenant_wait_time_total
                    .iter()
                    .map(|(id, d)| format!("{}: {}", json_string(id), seconds(*d)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "tenant_hard_limit_bytes",
            tenants(&s.tenant_hard_limit_bytes),
        ),
        ("waits_abandoned_total", s.waits_abandoned_total.to_string()),
        (
            "tenant_waits_abandoned_total",
            tenants(&s.tenant_waits_abandoned_total),
        ),
        ("tenant_guarantee_bytes", tenants(&s.tenant_guarantee_bytes)),
    ];
    let mut out = String::from("{\n");
    for (i, (key, value)) in fields.iter().enumerate() {
        let comma = if i + 1 < fields.len() { "," } else { "" };
        writeln!(out, "  {}: {value}{comma}", json_string(key)).unwrap();
    }
    out.push_str("}\n");
    out
}

/// Seconds as a JSON number, exactly as `f64` prints them (Python reads them back to the
/// same `float`).
fn seconds(d: std::time::Duration) -> String {
    format!("{:?}", d.as_secs_f64())
}

fn map_json(entries: impl Iterator<Item = (String, u64)>) -> String {
    let sorted: BTreeMap<String, u64> = entries.collect();
    let items: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{}: {v}", json_string(k)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// A JSON string literal: `"` and `\` escaped, control characters as `\u00XX`, the rest
/// as UTF-8.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                write!(out, "\\u{:04x}", c as u32).unwrap();
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn json_string_escapes() {
    assert_eq!(
        json_string("a\"b\\c\nd\u{1}é"),
        r#""a\"b\\c\u000ad\u0001é""#
    );
}
