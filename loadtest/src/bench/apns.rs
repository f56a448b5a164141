//! The engine benchmark: the engine pushing to the mock APNs, optionally side by side with
//! `h2load` against the same mock.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use magicpush_engine::cert::PushCertificate;
use magicpush_engine::{Client, DevicePush, DeviceToken, Endpoint};
use magicpush_fixtures::TestPki;
use serde::Serialize;

use crate::mock_apns::{ClientAuth, MockApns, MockConfig, MockHandle};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Pushes per engine run.
    pub pushes: u64,
    /// HTTP/2 connections (engine and h2load alike).
    pub connections: usize,
    /// Concurrent streams per connection (engine cap, mock's SETTINGS, h2load -m).
    pub streams: usize,
    /// Mock answer delay.
    pub delay: Duration,
    /// Tokio worker threads for the engine, and h2load's -t.
    pub threads: usize,
    /// Run h2load too and report the ratio.
    pub compare_h2load: bool,
    /// A running APNs (mock) to push to instead of an in-process mock.
    pub external: Option<External>,
    /// Engine (and h2load) runs, one after the other; the median one is reported.
    pub rounds: usize,
    /// Topics (push certificates) the pushes are spread over; each topic gets
    /// `connections / topics` connections (at least one).
    pub topics: usize,
    /// The order in which the pushes of several topics are submitted.
    pub order: TopicOrder,
}

/// How the pushes of several topics follow one another in the submitted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TopicOrder {
    /// Round robin: consecutive pushes go to consecutive topics (a caller mixing its
    /// customers' pushes one by one).
    #[default]
    Interleaved,
    /// Each topic's pushes together, topic after topic (what `magicpush serve` hands the
    /// engine for a refresh, which walks the devices tenant by tenant).
    ByTopic,
}

impl TopicOrder {
    /// The topic (an index below `topics`) of push `i` of `pushes`.
    pub fn topic_of(self, i: u64, pushes: u64, topics: u64) -> usize {
        let topics = topics.max(1);
        match self {
            TopicOrder::Interleaved => (i % topics) as usize,
            // Blocks as even as integer division allows: topic t gets pushes
            // [t·pushes/topics, (t+1)·pushes/topics).
            TopicOrder::ByTopic => {
                ((u128::from(i) * u128::from(topics)) / u128::from(pushes.max(1))) as usize
            }
        }
    }
}

/// An APNs-like server started elsewhere.
#[derive(Debug, Clone)]
pub struct External {
    /// `https://host:port`.
    pub url: String,
    /// Push certificate PEM path.
    pub cert: std::path::PathBuf,
    /// Its key PEM path.
    pub key: std::path::PathBuf,
    /// CA that signed the server's certificate.
    pub ca: std::path::PathBuf,
}

/// The measurements; `--json` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub pushes: u64,
    pub connections: usize,
    pub streams: usize,
    pub delay_ms: u64,
    pub delivered: u64,
    pub failed: u64,
    pub elapsed_s: f64,
    pub pushes_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Peak RSS of this process (engine, plus the in-process mock when there is one).
    pub peak_rss_mb: f64,
    /// Most pushes held by the engine at once (queue + in flight).
    pub max_held: u64,
    /// RSS growth during the run divided by `max_held`: an upper bound on memory per push
    /// held (it includes the mock's per-stream memory when the mock is in-process).
    pub bytes_per_held_push: Option<f64>,
    /// Connections × streams / delay, when a delay is set.
    pub bound_per_s: Option<f64>,
    /// Engine CPU (its runtime threads, where the outcome consumer runs too) per push, µs,
    /// over the timed part (warm-up excluded).
    pub engine_cpu_us_per_push: Option<f64>,
    pub h2load_per_s: Option<f64>,
    pub ratio_vs_h2load: Option<f64>,
    /// h2load's CPU per request, µs.
    pub h2load_cpu_us_per_push: Option<f64>,
    /// h2load CPU per request / engine CPU per push: 1.0 means the engine is as frugal.
    pub cpu_ratio_vs_h2load: Option<f64>,
    pub ratio_vs_bound: Option<f64>,
    /// h2load's rate / the bound, when both are known: what the same mock and machine allow a
    /// reference client, so the bound's shortfall can be told apart from the engine's.
    pub h2load_ratio_vs_bound: Option<f64>,
    /// Every round's figures, in the order they ran (one entry without `--rounds`).
    pub rounds: Vec<Round>,
    /// Topics the pushes went to.
    pub topics: usize,
    /// The order of the pushes across topics.
    pub order: TopicOrder,
    /// Connections per topic.
    pub connections_per_topic: usize,
    /// Connections open when the clock started (all topics).
    pub connections_open_at_start: Option<usize>,
}

/// One round of a multi-round run.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub pushes_per_s: f64,
    pub engine_cpu_us_per_push: Option<f64>,
    pub h2load_per_s: Option<f64>,
    pub h2load_cpu_us_per_push: Option<f64>,
    pub ratio_vs_h2load: Option<f64>,
}

impl From<&BenchReport> for Round {
    fn from(r: &BenchReport) -> Self {
        Round {
            pushes_per_s: r.pushes_per_s,
            engine_cpu_us_per_push: r.engine_cpu_us_per_push,
            h2load_per_s: r.h2load_per_s,
            h2load_cpu_us_per_push: r.h2load_cpu_us_per_push,
            ratio_vs_h2load: r.ratio_vs_h2load,
        }
    }
}

/// A runtime for the in-process mock and one for the engine (`opts.threads` workers).
fn runtimes(
    opts: &BenchOptions,
) -> anyhow::Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
    let mock_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mock-apns")
        .enable_all()
        .build()?;
    let engine_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .thread_name("engine")
        .enable_all()
        .build()?;
    Ok((mock_rt, engine_rt))
}

/// The in-process mock on a loopback port, with `opts`'s stream limit and delay.
fn start_mock(
    rt: &tokio::runtime::Runtime,
    pki: &TestPki,
    opts: &BenchOptions,
    client_auth: ClientAuth,
) -> anyhow::Result<MockHandle> {
    let config = MockConfig {
        client_auth,
        max_streams: opts.streams as u32,
        delay: opts.delay,
        ..MockConfig::default()
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("static address");
    Ok(rt.block_on(MockApns::start(
        addr,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
        config,
    ))?)
}

/// Runs the benchmark on a runtime of its own for the mock and one for the engine.
pub fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let (mock_rt, engine_rt) = runtimes(opts)?;

    let pki;
    let mut mock: Option<MockHandle> = None;
    if opts.topics > 1 && opts.external.is_some() {
        bail!("--topics needs the in-process mock (its CA issues the topics' certificates)");
    }
    let mut extra = Vec::new();
    let (endpoint, cert, ca_pem, topic) = match &opts.external {
        Some(ext) => {
            let cert = PushCertificate::from_pem_files(&ext.cert, &ext.key)
                .context("loading the push certificate")?;
            let ca = std::fs::read(&ext.ca).context("reading the APNs CA")?;
            let topic = cert.topic().to_owned();
            let endpoint: Endpoint = ext.url.parse()?;
            (endpoint, cert, ca, topic)
        }
        None => {
            pki = TestPki::generate()?;
            let handle = start_mock(&mock_rt, &pki, opts, ClientAuth::Optional)?;
            let endpoint: Endpoint = handle.url().parse()?;
            mock = Some(handle);
            if opts.topics > 1 {
                extra = extra_topics(&pki.ca, opts.topics - 1)?;
            }
            let cert = PushCertificate::from_pem(
                pki.push.cert_pem.as_bytes(),
                pki.push.key_pem.as_bytes(),
            )?;
            (
                endpoint,
                cert,
                pki.ca.cert_pem().as_bytes().to_vec(),
                pki.topic.clone(),
            )
        }
    };

    // The first topic's certificate is the PKI's; the others were issued by its CA.
    let mut certs = vec![cert];
    certs.append(&mut extra);
    let mut rounds = Vec::new();
    let mut reports = Vec::new();
    for _ in 0..opts.rounds.max(1) {
        let report = measure_round(opts, &engine_rt, &endpoint, &certs, &ca_pem, &topic)?;
        rounds.push(Round::from(&report));
        reports.push(report);
    }
    // The round with the median ratio (or rate, without h2load) stands for the run; every
    // round is listed beside it.
    let key = |r: &BenchReport| r.ratio_vs_h2load.unwrap_or(r.pushes_per_s);
    reports.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mut report = reports.swap_remove(reports.len() / 2);
    report.peak_rss_mb = crate::rss::peak_rss_mb().unwrap_or(report.peak_rss_mb);
    report.rounds = rounds;
    if let Some(mock) = mock {
        mock_rt.block_on(mock.shutdown());
    }
    Ok(report)
}

/// One engine run, then (when asked) one h2load run against the same mock.
fn measure_round(
    opts: &BenchOptions,
    engine_rt: &tokio::runtime::Runtime,
    endpoint: &Endpoint,
    certs: &[PushCertificate],
    ca_pem: &[u8],
    topic: &str,
) -> anyhow::Result<BenchReport> {
    // The outcome consumer runs as a task on the engine's runtime, as an application's would:
    // waking it is then a scheduler hand-off, not a futex wake of a thread parked in block_on.
    let task = {
        let opts = opts.clone();
        let endpoint = endpoint.clone();
        let certs = certs.to_vec();
        let ca_pem = ca_pem.to_vec();
        engine_rt.spawn(async move { run_engine(&opts, endpoint, certs, &ca_pem).await })
    };
    let mut report = engine_rt.block_on(task)??;
    if opts.compare_h2load {
        let children_before = crate::cpu::children_cpu_s();
        let rate = run_h2load(opts, endpoint, topic)?;
        report.h2load_per_s = Some(rate);
        report.ratio_vs_h2load = Some(report.pushes_per_s / rate);
        report.h2load_ratio_vs_bound = report.bound_per_s.map(|b| rate / b);
        if let (Some(a), Some(b)) = (children_before, crate::cpu::children_cpu_s()) {
            let h2load_us = (b - a) * 1e6 / opts.pushes as f64;
            report.h2load_cpu_us_per_push = Some(h2load_us);
            report.cpu_ratio_vs_h2load = report
                .engine_cpu_us_per_push
                .filter(|e| *e > 0.0)
                .map(|e| h2load_us / e);
        }
    }
    Ok(report)
}

/// The engine's threads: its runtime's workers, where the outcome consumer runs too.
fn engine_cpu_s() -> Option<f64> {
    crate::cpu::threads_cpu_s(&["engine"])
}

fn token(i: u64) -> DeviceToken {
    let mut bytes = [0x42u8; 32];
    bytes[..8].copy_from_slice(&i.to_be_bytes());
    DeviceToken::from_bytes(&bytes).expect("32 bytes")
}

/// `n` push certificates of new topics from `ca`.
pub fn extra_topics(ca: &magicpush_fixtures::Ca, n: usize) -> anyhow::Result<Vec<PushCertificate>> {
    let now = time::OffsetDateTime::now_utc();
    (0..n)
        .map(|_| {
            let ck = magicpush_fixtures::push_cert(
                ca,
                &uuid::Uuid::new_v4().to_string(),
                now - time::Duration::days(1),
                now + time::Duration::days(365),
                magicpush_fixtures::KeyKind::EcdsaP256,
            )?;
            Ok(PushCertificate::from_pem(
                ck.cert_pem.as_bytes(),
                ck.key_pem.as_bytes(),
            )?)
        })
        .collect()
}

/// Connections per topic for `opts`.
fn per_topic(opts: &BenchOptions) -> usize {
    (opts.connections / opts.topics.max(1)).max(1)
}

async fn run_engine(
    opts: &BenchOptions,
    endpoint: Endpoint,
    certs: Vec<PushCertificate>,
    ca_pem: &[u8],
) -> anyhow::Result<BenchReport> {
    let per_topic = per_topic(opts);
    let total_connections = per_topic * certs.len();
    let in_flight = total_connections * opts.streams;
    let queue = (in_flight / certs.len()).max(1024);
    let topics: Vec<std::sync::Arc<str>> = certs
        .iter()
        .map(|c| std::sync::Arc::from(c.topic()))
        .collect();
    let mut builder = Client::builder()
        .endpoint(endpoint)
        .trust_anchor_pem(ca_pem)?
        .web_roots(false)
        .connections(per_topic)
        .max_total_connections(total_connections)
        .max_streams_per_connection(opts.streams)
        .queue_capacity(queue)
        .deadline(Duration::from_secs(120));
    for cert in certs {
        builder = builder.certificate(cert);
    }
    let client = builder.build()?;
    // Bring every topic to its steady state before the clock starts, so the run measures
    // pushing, not handshakes and a fresh process's first use of its memory: each round fills
    // every open connection's streams once (a connection's stream tables grow to the load it
    // carries; in a virtual machine the first touch of that memory costs as much as the
    // pushes). A pool connects at its first push and opens more as its load asks, so a topic
    // with several connections gets rounds until they are all open.
    let burst = per_topic * opts.streams;
    let ready_by = Instant::now() + Duration::from_secs(30);
    let open_at_start = loop {
        let warm: Vec<DevicePush> = topics
            .iter()
            .flat_map(|t| {
                (0..burst).map(|i| {
                    DevicePush::new(token(u64::MAX - i as u64), "warm-up").with_topic(t.clone())
                })
            })
            .collect();
        client.push_bulk(warm).finish().await;
        let s = client.status().await?;
        if s.open_connections >= total_connections || Instant::now() > ready_by {
            break s.open_connections;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rss_before = crate::rss::rss_mb().unwrap_or(0.0);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let mut failed = 0u64;
    let mut delivered = 0u64;
    let mut first_error = None;
    // The engine's CPU is read over the timed part only: the warm-up's handshakes and
    // pushes (100,000 of them with 1,000 topics) are not the pushes measured.
    let cpu_before = engine_cpu_s();
    let start = Instant::now();
    let n = topics.len() as u64;
    let (order, pushes) = (opts.order, opts.pushes);
    let mut bulk = client.push_bulk((0..pushes).map(|i| {
        DevicePush::new(token(i), "bench-magic")
            .with_topic(topics[order.topic_of(i, pushes, n)].clone())
    }));
    while let Some(item) = bulk.next().await {
        match item.result {
            Ok(d) => {
                delivered += 1;
                hist.saturating_record(d.latency.as_micros() as u64);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let engine_cpu_us_per_push = cpu_before
        .zip(engine_cpu_s())
        .map(|(a, b)| (b - a) * 1e6 / opts.pushes as f64);
    client.shutdown().await;
    if let Some(e) = &first_error {
        eprintln!("warning: {failed} pushes failed; first: {e}");
    }
    let peak = crate::rss::peak_rss_mb().unwrap_or(0.0);
    let max_held = (queue * topics.len() + in_flight) as u64;
    let bound = (!opts.delay.is_zero())
        .then(|| (total_connections * opts.streams) as f64 / opts.delay.as_secs_f64());
    // Only delivered pushes count; connections were open before the clock started.
    let rate = delivered as f64 / elapsed;
    Ok(BenchReport {
        pushes: opts.pushes,
        connections: opts.connections,
        streams: opts.streams,
        delay_ms: opts.delay.as_millis() as u64,
        delivered,
        failed,
        elapsed_s: elapsed,
        pushes_per_s: rate,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: hist.max() as f64 / 1000.0,
        peak_rss_mb: peak,
        max_held,
        bytes_per_held_push: (peak > rss_before)
            .then(|| (peak - rss_before) * 1024.0 * 1024.0 / max_held as f64),
        bound_per_s: bound,
        engine_cpu_us_per_push,
        h2load_per_s: None,
        ratio_vs_h2load: None,
        h2load_cpu_us_per_push: None,
        cpu_ratio_vs_h2load: None,
        ratio_vs_bound: bound.map(|b| rate / b),
        h2load_ratio_vs_bound: None,
        rounds: Vec::new(),
        topics: topics.len(),
        order: opts.order,
        connections_per_topic: per_topic,
        connections_open_at_start: Some(open_at_start),
    })
}

/// Runs `h2load` with the same connections, streams, headers, body and device paths; returns
/// its requests/s.
fn run_h2load(opts: &BenchOptions, endpoint: &Endpoint, topic: &str) -> anyhow::Result<f64> {
    let body = tempfile::NamedTempFile::new()?;
    std::fs::write(body.path(), br#"{"mdm":"bench-magic"}"#)?;
    let expiration = (std::time::SystemTime::now() + Duration::from_secs(7 * 86400))
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // One URI per request of a connection, each to another device, as the engine sends them:
    // h2load walks the list in order on each of its connections. (With a single URI h2load's
    // HPACK would send the path as one indexed byte and the mock would decode it for free,
    // which no real fleet allows.)
    let uris = tempfile::NamedTempFile::new()?;
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(uris.as_file());
        let per_connection = opts.pushes.div_ceil(opts.connections.max(1) as u64);
        for i in 0..per_connection {
            writeln!(w, "{endpoint}/3/device/{}", token(i).as_hex())?;
        }
        w.flush()?;
    }
    let threads = opts.threads.min(opts.connections).max(1);
    let output = Command::new("h2load")
        .args(["-n", &opts.pushes.to_string()])
        .args(["-c", &opts.connections.to_string()])
        .args(["-m", &opts.streams.to_string()])
        .args(["-t", &threads.to_string()])
        .args(["-d", &body.path().to_string_lossy()])
        .args(["-H", &format!("apns-topic: {topic}")])
        .args(["-H", "apns-push-type: mdm"])
        .args(["-H", "apns-priority: 10"])
        .args(["-H", &format!("apns-expiration: {expiration}")])
        .arg("-i")
        .arg(uris.path())
        .output()
        .context("running h2load (Debian package nghttp2-client)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_h2load(&text).with_context(|| format!("reading h2load's output:\n{text}"))
}

/// Reads h2load's summary: the requests that succeeded over the run's time without the
/// connection setup — `finished in` less the slowest `time for connect` — so that h2load is
/// timed as the engine is (its connections are open before its clock starts). Refuses a run
/// where any request failed.
pub fn parse_h2load(text: &str) -> anyhow::Result<f64> {
    let requests = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .context("no `requests:` line")?;
    let field = |name: &str| -> Option<u64> {
        requests
            .split(',')
            .find(|p| p.trim().ends_with(name))
            .and_then(|p| p.split_whitespace().rev().nth(1))
            .and_then(|n| n.parse().ok())
    };
    let (total, succeeded) = (field("total"), field("succeeded"));
    let (Some(total), Some(succeeded)) = (total, succeeded) else {
        bail!("no total/succeeded counts: {requests}");
    };
    if total != succeeded {
        bail!("not every h2load request succeeded: {requests}");
    }
    let finished = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .context("no `finished in` line")?;
    let finished_s = finished
        .split(',')
        .next()
        .and_then(|t| duration_s(t.trim()))
        .context("no run time in `finished in`")?;
    // `time for connect:  min  max  mean  sd  +/- sd`
    let connect_max_s = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("time for connect:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(duration_s)
        .unwrap_or(0.0);
    let pushing_s = finished_s - connect_max_s;
    if pushing_s <= 0.0 {
        bail!("h2load's run ({finished_s} s) is not longer than its connection setup ({connect_max_s} s)");
    }
    Ok(succeeded as f64 / pushing_s)
}

/// `1.23s`, `350.12ms`, `870us` → seconds.
fn duration_s(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|v| v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2load_output() {
        let out = "starting benchmark...\n\
finished in 1.25s, 80000.00 req/s, 5.12MB/s\n\
requests: 100000 total, 100000 started, 100000 done, 100000 succeeded, 0 failed, 0 errored, 0 timeout\n\
time for connect:    20.00ms     50.00ms     30.00ms      8.00ms    60.00%\n";
        // 100,000 over 1.25 s less the slowest connect (50 ms).
        let rate = parse_h2load(out).unwrap();
        assert!((rate - 100_000.0 / 1.2).abs() < 0.5, "{rate}");
        let no_connect = out.replace("time for connect", "time for something");
        assert!((parse_h2load(&no_connect).unwrap() - 80_000.0).abs() < 0.5);
        assert!((duration_s("870us").unwrap() - 870e-6).abs() < 1e-12);
        assert!((duration_s("350.5ms").unwrap() - 0.3505).abs() < 1e-12);
        assert_eq!(duration_s("12"), None);
        let bad = out.replace("100000 succeeded, 0 failed", "99990 succeeded, 10 failed");
        assert!(parse_h2load(&bad).is_err());
        assert!(parse_h2load("garbage").is_err());
    }

    #[test]
    fn orders_spread_every_topic_evenly() {
        for (pushes, topics) in [(300_000u64, 1_000u64), (10, 3), (7, 7), (5, 1)] {
            for order in [TopicOrder::Interleaved, TopicOrder::ByTopic] {
                let seq: Vec<usize> = (0..pushes)
                    .map(|i| order.topic_of(i, pushes, topics))
                    .collect();
                let mut counts = vec![0u64; topics as usize];
                for &t in &seq {
                    counts[t] += 1;
                }
                let (lo, hi) = (counts.iter().min(), counts.iter().max());
                assert!(
                    hi.unwrap() - lo.unwrap() <= 1,
                    "{order:?} {pushes}/{topics}"
                );
                // By topic, each topic's pushes are one run, in topic order.
                let runs = 1 + seq.windows(2).filter(|w| w[0] != w[1]).count();
                if order == TopicOrder::ByTopic {
                    assert!(seq.windows(2).all(|w| w[0] <= w[1]));
                    assert_eq!(runs as u64, topics.min(pushes));
                } else if topics > 1 {
                    assert_eq!(runs as u64, pushes);
                }
            }
        }
    }
}

/// What [`fairness`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct FairnessReport {
    /// Pushes of the busy topic's backlog.
    pub backlog: u64,
    pub delay_ms: u64,
    /// Single pushes of the quiet topic measured in each phase.
    pub singles_idle: usize,
    pub singles_loaded: usize,
    /// Median latency of the quiet topic's single pushes on an idle engine, ms.
    pub idle_p50_ms: f64,
    /// The same while the busy topic works through its backlog, ms.
    pub loaded_p50_ms: f64,
    /// `loaded_p50_ms / idle_p50_ms`: 1.0 means the backlog costs the quiet topic nothing.
    pub ratio: f64,
    /// How long the backlog took, s.
    pub backlog_s: f64,
}

/// One topic's single pushes (one every 10 ms) on an idle engine, then while another topic
/// pushes a backlog of `opts.pushes`: does the backlog hold them back? In-process mock only.
pub fn fairness(opts: &BenchOptions) -> anyhow::Result<FairnessReport> {
    if opts.external.is_some() {
        bail!("the fairness run needs the in-process mock");
    }
    let (mock_rt, engine_rt) = runtimes(opts)?;
    let pki = TestPki::generate()?;
    // Client certificates required: each connection is held to its topic.
    let mock = start_mock(&mock_rt, &pki, opts, ClientAuth::Required)?;
    let endpoint: Endpoint = mock.url().parse()?;
    let cert = |ck: &magicpush_fixtures::CertKey| {
        PushCertificate::from_pem(ck.cert_pem.as_bytes(), ck.key_pem.as_bytes())
    };
    let (busy, quiet) = (cert(&pki.push)?, cert(&pki.other_topic)?);
    let ca = pki.ca.cert_pem().as_bytes().to_vec();
    let opts = opts.clone();
    let report = engine_rt.block_on(async move {
        let (busy_topic, quiet_topic): (std::sync::Arc<str>, std::sync::Arc<str>) =
            (busy.topic().into(), quiet.topic().into());
        let client = Client::builder()
            .endpoint(endpoint)
            .trust_anchor_pem(&ca)?
            .web_roots(false)
            .connections(opts.connections)
            .max_streams_per_connection(opts.streams)
            .queue_capacity(opts.pushes as usize)
            .deadline(Duration::from_secs(300))
            .certificate(busy)
            .certificate(quiet)
            .build()?;
        let single = |i: u64| {
            let client = client.clone();
            let topic = quiet_topic.clone();
            async move {
                let started = Instant::now();
                let push = DevicePush::new(token(1 << 40 | i), "quiet").with_topic(topic);
                client.push(push).await.map(|_| started.elapsed())
            }
        };
        // Warm both topics up.
        single(0).await?;
        client
            .push(DevicePush::new(token(0), "busy").with_topic(busy_topic.clone()))
            .await?;
        let singles = |count: usize, stop: Option<tokio::sync::watch::Receiver<bool>>| {
            let single = &single;
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut running = Vec::new();
                for i in 0..count {
                    tick.tick().await;
                    if stop.as_ref().is_some_and(|s| *s.borrow()) {
                        break;
                    }
                    running.push(tokio::spawn(single(i as u64 + 1)));
                }
                let mut latencies = Vec::new();
                for r in running {
                    latencies.push(r.await??.as_secs_f64() * 1000.0);
                }
                anyhow::Ok(latencies)
            }
        };
        let idle = singles(200, None).await?;
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let backlog = {
            let client = client.clone();
            let topic = busy_topic.clone();
            let n = opts.pushes;
            tokio::spawn(async move {
                let started = Instant::now();
                let summary = client
                    .push_bulk(
                        (0..n).map(|i| DevicePush::new(token(i), "busy").with_topic(topic.clone())),
                    )
                    .finish()
                    .await;
                let _ = done_tx.send(true);
                (summary, started.elapsed())
            })
        };
        // Let the backlog fill the busy topic's connections first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let loaded = singles(100_000, Some(done_rx)).await?;
        let (summary, took) = backlog.await?;
        client.shutdown().await;
        if summary.delivered != opts.pushes {
            bail!("the backlog lost pushes: {summary:?}");
        }
        let idle_p50 = median(idle.clone());
        let loaded_p50 = median(loaded.clone());
        anyhow::Ok(FairnessReport {
            backlog: opts.pushes,
            delay_ms: opts.delay.as_millis() as u64,
            singles_idle: idle.len(),
            singles_loaded: loaded.len(),
            idle_p50_ms: idle_p50,
            loaded_p50_ms: loaded_p50,
            ratio: loaded_p50 / idle_p50,
            backlog_s: took.as_secs_f64(),
        })
    })?;
    mock_rt.block_on(mock.shutdown());
    Ok(report)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
