//! `weir-load`: a load generator for a Weir node.
//!
//! Each of `--concurrency` workers keeps one keep-alive connection (HTTP/1.1,
//! or HTTPS with ALPN) and posts batches back to back for `--duration`. At the
//! end it prints requests/s, events/s, latency percentiles and every non-2xx
//! answer by status, as text and (with `--json`) as one JSON line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Parser, Clone)]
#[command(
    name = "weir-load",
    about = "Post event batches to a Weir node and measure it"
)]
struct Args {
    /// Node address, host:port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: String,
    /// Use HTTPS.
    #[arg(long)]
    tls: bool,
    /// CA certificate (PEM) to trust for HTTPS; without it, --insecure is required.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Skip certificate verification (self-signed local nodes only).
    #[arg(long)]
    insecure: bool,
    /// API key.
    #[arg(long, default_value = "demo-key")]
    key: String,
    #[arg(long, default_value = "LOAD")]
    category: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Approximate size of one event in bytes.
    #[arg(long, default_value_t = 400)]
    event_bytes: usize,
    /// Distinct device ids (the record key).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Seconds to run (after a 1 s warm-up that is not counted).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Print a JSON summary line too.
    #[arg(long)]
    json: bool,
    /// Spread requests over this many tenants (keys `<key>-0` … `<key>-N-1`), Zipf-distributed.
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Zipf exponent of the tenant mix (higher: more skewed to tenant 0).
    #[arg(long, default_value_t = 1.1)]
    zipf: f64,
    /// Print the `[[tenants]]` TOML for --tenants and --key (and the quiet key), then exit.
    #[arg(long)]
    print_tenants: bool,
    /// A quiet tenant's key: one extra connection posts at --quiet-rate and its latency is reported apart.
    #[arg(long)]
    quiet_key: Option<String>,
    /// Requests per second of the quiet tenant.
    #[arg(long, default_value_t = 20.0)]
    quiet_rate: f64,
    /// Instead of posting: be an OTLP/HTTP sink at this address that reads
    /// and discards every export (for measuring a node's telemetry cost).
    #[arg(long)]
    otlp_sink: Option<String>,
    /// Send a W3C `traceparent` flagged not sampled with every request (a
    /// new trace per request), as a client with its own tracing does: the
    /// node follows its decision, and with its tracing off passes it on
    /// to the records unchanged.
    #[arg(long)]
    unsampled_traceparent: bool,
    /// The node's process id: its CPU time (user + system, all threads) is
    /// read from /proc at the start and the end of the measured window and
    /// reported as `node_cpu_ticks` (clock ticks), next to `ok_requests`,
    /// and by kind of thread, user and system apart (`node_cpu_by_thread`);
    /// and its memory: the peak RSS since it started (`VmHWM`), and its RSS
    /// at the start and the end of the window and every 10 s in between
    /// (a soak's growth).
    #[arg(long)]
    node_pid: Option<u32>,
}

/// A size in KiB from /proc/<pid>/status (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// A process's CPU time so far, in clock ticks (utime + stime of
/// /proc/<pid>/stat; its fields 14 and 15, counted after the command name,
/// which may hold spaces, in parentheses).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("/proc/<pid>/stat without a command name")?;
    let (user, system) = user_and_system(after_name)?;
    Ok(user + system)
}

/// utime and stime of a `stat` line's fields after the command name (the
/// 12th and 13th of them: fields 14 and 15 of the whole line).
fn user_and_system(after_name: &str) -> anyhow::Result<(u64, u64)> {
    let mut fields = after_name.split_whitespace().skip(11);
    let mut next =
        || -> anyhow::Result<u64> { Ok(fields.next().context("short /proc stat line")?.parse()?) };
    Ok((next()?, next()?))
}

/// CPU time by kind of thread: (user, system) clock ticks of each.
#[derive(Clone, Copy, Default)]
struct ThreadCpu {
    runtime: (u64, u64),
    librdkafka: (u64, u64),
    other: (u64, u64),
}

impl ThreadCpu {
    /// What was spent from `before` to `self`.
    fn since(self, before: ThreadCpu) -> ThreadCpu {
        let d = |a: (u64, u64), b: (u64, u64)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1));
        ThreadCpu {
            runtime: d(self.runtime, before.runtime),
            librdkafka: d(self.librdkafka, before.librdkafka),
            other: d(self.other, before.other),
        }
    }

    fn json(self) -> String {
        let kind = |(user, system): (u64, u64)| format!("{{\"user\":{user},\"system\":{system}}}");
        format!(
            "{{\"runtime\":{},\"librdkafka\":{},\"other\":{}}}",
            kind(self.runtime),
            kind(self.librdkafka),
            kind(self.other)
        )
    }
}

/// The node's CPU time so far by kind of thread, in clock ticks, user and
/// system apart: the runtime's workers (`tokio-*`: the request path, from
/// the socket to the producer's queue), librdkafka's (`rdk:*`: batching,
/// compressing and sending records, and their acknowledgements) and the
/// rest. Where a node's CPU goes between its own code and the Kafka client,
/// and between user space and the kernel, without a profiler. (A thread
/// that ended within the window takes its time with it; the process total
/// keeps it.)
fn cpu_by_thread(pid: u32) -> anyhow::Result<ThreadCpu> {
    let mut cpu = ThreadCpu::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        let (name, after_name) = stat
            .split_once(" (")
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .context("/proc/<pid>/task/<tid>/stat without a command name")?;
        let (user, system) = user_and_system(after_name)?;
        let slot = if name.starts_with("tokio") {
            &mut cpu.runtime
        } else if name.starts_with("rdk:") {
            &mut cpu.librdkafka
        } else {
            &mut cpu.other
        };
        slot.0 += user;
        slot.1 += system;
    }
    Ok(cpu)
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    events: u64,
    by_status: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_tenants {
        let mut keys: Vec<String> = tenant_keys(&args);
        keys.extend(args.quiet_key.clone());
        for key in &keys {
            // Named after the key, so several prints can go in one config.
            let name: String = key
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            println!(
                "[[tenants]]\nname = \"{name}\"\nkeys_sha256 = [\"{}\"]\nrequests_per_second = 1000000.0\nrequests_burst = 1000000\nevents_per_second = 100000000.0\nevents_burst = 100000000\n",
                sha256_hex(key)
            );
        }
        return Ok(());
    }
    if let Some(address) = &args.otlp_sink {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(otlp_sink(address));
    }
    if args.tls && args.ca.is_none() && !args.insecure {
        bail!("--tls needs --ca <pem> or --insecure");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// Accepts OTLP/HTTP exports and answers 200 with an empty (valid)
/// protobuf response, counting nothing.
async fn otlp_sink(address: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    eprintln!("OTLP sink on {address}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |request: http::Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(Bytes::new()))
                            .expect("a valid response"),
                    )
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The keys of the load tenants: `--key` alone, or `<key>-i` for each of `--tenants`.
fn tenant_keys(args: &Args) -> Vec<String> {
    if args.tenants <= 1 {
        vec![args.key.clone()]
    } else {
        (0..args.tenants)
            .map(|i| format!("{}-{i}", args.key))
            .collect()
    }
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Cumulative Zipf weights over `n` tenants: tenant i is picked with weight 1/(i+1)^s.
fn zipf_table(n: usize, s: f64) -> Vec<f64> {
    let mut total = 0.0;
    let mut table: Vec<f64> = (0..n)
        .map(|i| {
            total += 1.0 / ((i + 1) as f64).powf(s);
            total
        })
        .collect();
    for w in &mut table {
        *w /= total;
    }
    table
}

async fn run(args: Args) -> anyhow::Result<()> {
    let connector = match args.tls {
        true => Some(tls_connector(&args)?),
        false => None,
    };
    let bodies = Arc::new(make_bodies(&args));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let keys = Arc::new(tenant_keys(&args));
    let zipf = Arc::new(zipf_table(keys.len(), args.zipf));
    let quiet = args.quiet_key.clone().map(|key| {
        let (args, bodies, connector, measuring, stop) = (
            args.clone(),
            bodies.clone(),
            connector.clone(),
            measuring.clone(),
            stop.clone(),
        );
        tokio::spawn(
            async move { quiet_worker(key, args, bodies, connector, measuring, stop).await },
        )
    });
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (keys, zipf) = (keys.clone(), zipf.clone());
        let (args, bodies, connector, measuring, stop) = (
            args.clone(),
            bodies.clone(),
            connector.clone(),
            measuring.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            worker(w, args, keys, zipf, bodies, connector, measuring, stop).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = args.node_pid.map(cpu_ticks).transpose()?;
    let threads_before = args.node_pid.map(cpu_by_thread).transpose()?;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    // The node's RSS at the start of the window and every 10 s after.
    let mut rss_kib = Vec::new();
    loop {
        if let Some(pid) = args.node_pid {
            rss_kib.push(status_kib(pid, "VmRSS")?);
        }
        let left = Duration::from_secs(args.duration).saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(Duration::from_secs(10))).await;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = args.node_pid.map(cpu_ticks).transpose()?;
    let threads_after = args.node_pid.map(cpu_by_thread).transpose()?;
    let peak_rss_kib = args
        .node_pid
        .map(|pid| status_kib(pid, "VmHWM"))
        .transpose()?;
    let node_cpu_ticks = cpu_before.zip(cpu_after).map(|(b, a)| a.saturating_sub(b));
    let node_threads = threads_before.zip(threads_after).map(|(b, a)| a.since(b));

    let mut total = Tally::default();
    for worker in workers {
        let t = worker.await?;
        total.latencies_us.extend(t.latencies_us);
        total.ok += t.ok;
        total.events += t.events;
        total.errors += t.errors;
        for (s, n) in t.by_status {
            *total.by_status.entry(s).or_default() += n;
        }
    }
    total.latencies_us.sort_unstable();
    let pct = |p: f64| percentile(&total.latencies_us, p);
    let requests = total.latencies_us.len() as f64;
    let non_2xx: u64 = total
        .by_status
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    println!(
        "{} s, {} connections, batch {} x ~{} B{}",
        args.duration,
        args.concurrency,
        args.batch,
        args.event_bytes,
        if args.tls { ", TLS" } else { "" }
    );
    println!(
        "requests/s {:.0}  events/s {:.0}  latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        requests / elapsed,
        total.events as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "answers by status {:?}, non-2xx {non_2xx}, connection errors {}",
        total.by_status, total.errors
    );
    if let (Some(peak), Some(first), Some(last)) = (peak_rss_kib, rss_kib.first(), rss_kib.last()) {
        let mb = |kib: u64| kib as f64 / 1024.0;
        let samples: Vec<String> = rss_kib.iter().map(|&k| format!("{:.0}", mb(k))).collect();
        println!(
            "node memory: peak RSS {:.1} MB (since it started), RSS {:.1} → {:.1} MB over the window (every 10 s: {})",
            mb(peak),
            mb(*first),
            mb(*last),
            samples.join(" ")
        );
    }
    let mut quiet_json = String::new();
    if let Some(quiet) = quiet {
        let mut q = quiet.await?;
        q.latencies_us.sort_unstable();
        let at = |p: f64| percentile(&q.latencies_us, p);
        println!(
            "quiet tenant: {} requests, {} ok, latency ms p50 {:.2} p99 {:.2} max {:.2}, by status {:?}",
            q.latencies_us.len(),
            q.ok,
            at(0.5),
            at(0.99),
            at(1.0),
            q.by_status
        );
        quiet_json = format!(
            ",\"quiet_requests\":{},\"quiet_ok\":{},\"quiet_p50_ms\":{:.3},\"quiet_p99_ms\":{:.3}",
            q.latencies_us.len(),
            q.ok,
            at(0.5),
            at(0.99)
        );
    }
    if args.json {
        let mut node_cpu = node_cpu_ticks
            .map(|ticks| format!(",\"node_cpu_ticks\":{ticks}"))
            .unwrap_or_default();
        if let Some(threads) = node_threads {
            node_cpu.push_str(&format!(",\"node_cpu_by_thread\":{}", threads.json()));
        }
        node_cpu.push_str(&quiet_json);
        if let (Some(peak), Some(first), Some(last)) =
            (peak_rss_kib, rss_kib.first(), rss_kib.last())
        {
            let samples: Vec<String> = rss_kib.iter().map(u64::to_string).collect();
            node_cpu.push_str(&format!(
                ",\"node_peak_rss_kib\":{peak},\"node_rss_start_kib\":{first},\"node_rss_end_kib\":{last},\"node_rss_kib_every_10s\":[{}]",
                samples.join(",")
            ));
        }
        println!(
            "{{\"requests_per_s\":{:.1},\"events_per_s\":{:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"non_2xx\":{non_2xx},\"errors\":{},\"ok_requests\":{}{node_cpu}}}",
            requests / elapsed,
            total.events as f64 / elapsed,
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0),
            total.errors,
            total.ok
        );
    }
    Ok(())
}

fn percentile(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    sorted_us[((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1] as f64
        / 1000.0
}

/// One connection posting at `--quiet-rate` for a quiet tenant.
async fn quiet_worker(
    key: String,
    args: Args,
    bodies: Arc<Vec<Bytes>>,
    connector: Option<tokio_rustls::TlsConnector>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut sender = None;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.quiet_rate.max(0.1)));
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        if sender.is_none() {
            sender = connect(&args, &connector).await.ok();
        }
        let Some(s) = sender.as_mut() else { continue };
        n += 1;
        let started = Instant::now();
        let result = post(s, &key, bodies[n % bodies.len()].clone(), None).await;
        if matches!(result, Ok((_, true)) | Err(_)) {
            sender = None;
        }
        match result {
            Ok((status, _))
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) =>
            {
                tally
                    .latencies_us
                    .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                *tally.by_status.entry(status).or_default() += 1;
                // 202: every event accepted, some spooled by the node.
                tally.ok += u64::from(status == 200 || status == 202);
            }
            Ok(_) | Err(_) => {}
        }
    }
    tally
}

async fn post(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    key: &str,
    body: Bytes,
    traceparent: Option<String>,
) -> anyhow::Result<(u16, bool)> {
    let mut request = http::Request::post("/v1/batch")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let request = request.body(Full::new(body))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    // The node's last answer on a connection it closes (its age, a drain)
    // says so: the next request goes on a new connection, not counted as
    // a connection error.
    let closing = response
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    response.into_body().collect().await?;
    Ok((status, closing))
}

/// A few distinct bodies per worker set: different devices, same shape.
fn make_bodies(args: &Args) -> Vec<Bytes> {
    let ips = [
        "81.2.69.142",
        "2001:480:10::1",
        "89.160.20.128",
        "8.8.8.8",
        "192.0.2.1",
    ];
    (0..64)
        .map(|b| {
            let device = format!("device-{}", b % args.devices.max(1));
            let events: Vec<String> = (0..args.batch)
                .map(|i| {
                    // One in ten from a crawler, and an e-mail address in
                    // every event: the example filters (tag-bots, redact-pii)
                    // have work to do, as on real traffic.
                    let user_agent = match (b + i) % 10 {
                        0 => "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                        _ => "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
                    };
                    let head = format!(
                        r#"{{"id":"ev-{b}-{i}","ts":1763780000000,"name":"screen_view","ip":"{}","user_agent":"{user_agent}","props":{{"screen":"checkout","cold":false,"email":"user-{b}-{i}@example.com","pad":""#,
                        ips[(b + i) % ips.len()]
                    );
                    let pad = args.event_bytes.saturating_sub(head.len() + 3);
                    format!("{head}{}\"}}}}", "x".repeat(pad))
                })
                .collect();
            Bytes::from(format!(
                r#"{{"meta":{{"category":"{}","app":"load","sdk":"weir-load/0.1","device_id":"{device}"}},"data":[{}]}}"#,
                args.category,
                events.join(",")
            ))
        })
        .collect()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(
    args: &Args,
    connector: &Option<tokio_rustls::TlsConnector>,
) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(&args.target).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match connector {
        Some(c) => Box::new(
            c.connect(rustls_pki_types::ServerName::try_from("localhost")?, tcp)
                .await?,
        ),
        None => Box::new(tcp),
    };
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    w: usize,
    args: Args,
    keys: Arc<Vec<String>>,
    zipf: Arc<Vec<f64>>,
    bodies: Arc<Vec<Bytes>>,
    connector: Option<tokio_rustls::TlsConnector>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut sender = None;
    let mut n = w;
    while !stop.load(Ordering::Relaxed) {
        if sender.is_none() {
            match connect(&args, &connector).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        tally.errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        n += 1;
        // A cheap deterministic spread over [0, 1) for the Zipf pick.
        let x = ((n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        let tenant = zipf.partition_point(|&w| w < x).min(keys.len() - 1);
        let started = Instant::now();
        let traceparent = args
            .unsampled_traceparent
            .then(|| format!("00-{:016x}{:016x}-{:016x}-00", w + 1, n, n));
        let result = post(
            s,
            &keys[tenant],
            bodies[n % bodies.len()].clone(),
            traceparent,
        )
        .await;
        let elapsed = started.elapsed();
        if let Ok((_, true)) = result {
            sender = None;
        }
        match result {
            Ok((status, _)) => {
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    tally
                        .latencies_us
                        .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                    *tally.by_status.entry(status).or_default() += 1;
                    // 202: every event accepted, some spooled by the node.
                    if status == 200 || status == 202 {
                        tally.ok += 1;
                        tally.events += args.batch as u64;
                    }
                }
            }
            Err(_) => {
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    tally.errors += 1;
                }
                sender = None;
            }
        }
    }
    tally
}

fn tls_connector(args: &Args) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match &args.ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in
                rustls_pki_types::CertificateDer::pem_file_iter(path).context("reading --ca")?
            {
                roots.add(cert?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts any certificate: `--insecure`, for a local node's self-signed one.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
