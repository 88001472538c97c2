//! The end-to-end harness: a real tansu broker, real `weir` processes on
//! loopback, an HTTP(S) client and a Kafka reader.
//!
//! One broker serves every test of a test binary; each test uses its own
//! topics, so tests run in parallel without seeing each other's records.

pub mod otlp;
pub mod scrape;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A file of `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// A filter component built by `scripts/build-filters.sh`, e.g. `redact_pii`.
pub fn filter_wasm(name: &str) -> PathBuf {
    built_component("target/wasm32-unknown-unknown/release", name)
}

/// A Python filter built by `scripts/build-filters.sh` (componentize-py).
pub fn python_filter(name: &str) -> PathBuf {
    built_component("target/wasm-py", name)
}

/// A JavaScript filter built by `scripts/build-filters.sh` (jco).
pub fn js_filter(name: &str) -> PathBuf {
    built_component("target/wasm-js", name)
}

/// A component `scripts/build-filters.sh` built into `dir`.
pub fn built_component(dir: &str, name: &str) -> PathBuf {
    let path = root().join(dir).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-filters.sh",
        path.display()
    );
    path
}

/// The compiled-filter cache the tests' nodes share (`WEIR_FILTER_CACHE`):
/// a Python component is compiled once per build of the engine, not once
/// per node.
pub fn filter_cache() -> String {
    root().join("target/filter-cache").display().to_string()
}

/// The `weir` binary cargo built for this test run.
pub fn weir_bin() -> PathBuf {
    if let Ok(path) = std::env::var("WEIR_BIN") {
        return path.into();
    }
    // target/<profile>/deps/<test binary> → target/<profile>/weir
    let exe = std::env::current_exe().unwrap_or_default();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("weir"))
        .unwrap_or_default();
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p weir-gateway` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A free loopback port (bound and released; good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Spawns a child that the kernel kills when this test process exits, even
/// if it is killed itself. The spawning thread must outlive the child (a
/// death signal fires when the *thread* that forked exits), so long-lived
/// children are spawned from a thread that never ends.
fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn()
}

/// A tansu broker listening at `url`, its storage in memory.
fn tansu_broker(tansu: &Path, url: &str) -> Command {
    let mut command = Command::new(tansu);
    command
        .args([
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// The shared tansu broker of this test process: its bootstrap address.
pub fn kafka() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| {
        let tansu = std::env::var("WEIR_TANSU")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join("var/bin/tansu"));
        assert!(
            tansu.exists(),
            "tansu not found at {}: run scripts/setup.sh (or set WEIR_TANSU)",
            tansu.display()
        );
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let child = spawn_tied(tansu_broker(&tansu, &url));
            let failed = child.is_err();
            let _ = tx.send(child.map(|_| ()));
            if !failed {
                // Keep this thread (the child's parent thread) alive for the process lifetime.
                loop {
                    std::thread::park();
                }
            }
        });
        rx.recv().expect("tansu spawner").expect("starting tansu");
        wait_for_port(port, Duration::from_secs(20));
        address
    })
}

/// A server process of one test's own (a broker, a Redis), to freeze,
/// thaw or kill. Killed when dropped.
pub struct Server(Child);

impl Server {
    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.0.id() as i32, signal);
        }
    }

    /// Kills it (SIGKILL, after a thaw) and waits for it to be gone.
    fn stop(&mut self) {
        self.thaw();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A tansu broker of one test's own, to freeze, stop or replace (the
/// shared one is [`kafka`]). Killed when dropped.
pub struct Broker {
    server: Server,
    pub port: u16,
    /// Its bootstrap address.
    pub address: String,
}

impl Broker {
    /// A new broker (in memory) on a free port.
    pub fn start() -> Broker {
        Broker::start_on(free_port())
    }

    /// A new broker on `port`: a broker replaced at the same address has
    /// none of the old one's state.
    pub fn start_on(port: u16) -> Broker {
        let tansu = std::env::var("WEIR_TANSU")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join("var/bin/tansu"));
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let child = tansu_broker(&tansu, &url).spawn().expect("starting tansu");
        wait_for_port(port, Duration::from_secs(20));
        Broker {
            server: Server(child),
            port,
            address,
        }
    }
}

impl std::ops::Deref for Broker {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

/// A `redis-server` of one test's own (Debian's package, installed by
/// `scripts/setup.sh --tests`), on a free loopback port, without
/// persistence. Killed when dropped.
pub struct Redis {
    server: Server,
    pub port: u16,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// A new, empty server on `port` (to bring one back where it was).
    pub fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &["--port", &port.to_string()])
    }

    /// A server with `args` (e.g. TLS or a password), listening on `port`.
    pub fn start_with(port: u16, args: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1"])
            .args(args)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server: run scripts/setup.sh --tests");
        wait_for_port(port, Duration::from_secs(20));
        Redis {
            server: Server(child),
            port,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }

    /// Kills the server (SIGKILL) and waits for it to be gone; its port.
    pub fn kill(mut self) -> u16 {
        self.server.stop();
        self.port
    }

    /// Runs one command with `redis-cli`; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("running redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl std::ops::Deref for Redis {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

/// How often [`eventually`] and its kin probe.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one probe of [`eventually`] found: the awaited value, or not yet.
/// `true`, `Some(value)` and `Ok(value)` are there; `false`, `None` and
/// `Err(seen)` are not yet (`seen`, the last one, goes in the failure message).
pub trait Probe {
    type Value;
    fn found(self) -> Result<Self::Value, String>;
}

impl Probe for bool {
    type Value = ();
    fn found(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn found(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: std::fmt::Display> Probe for Result<T, E> {
    type Value = T;
    fn found(self) -> Result<T, String> {
        self.map_err(|seen| format!("{seen:#}"))
    }
}

/// Probes every [`POLL_INTERVAL`] until a probe finds what it looks for or
/// `within` has passed: what it found, or what the last probe saw. A probe
/// under way is not cut short (the last one may end after `within`).
pub async fn poll_until<P: Probe, F: Future<Output = P>>(
    within: Duration,
    mut probe: impl FnMut() -> F,
) -> Result<P::Value, String> {
    let started = Instant::now();
    loop {
        match probe().await.found() {
            Ok(value) => return Ok(value),
            Err(seen) if started.elapsed() >= within => return Err(seen),
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Waits for `what` to hold: probes every [`POLL_INTERVAL`] until a probe
/// finds it, and fails the test if none has within `within`.
pub async fn eventually<P: Probe, F: Future<Output = P>>(
    within: Duration,
    what: &str,
    probe: impl FnMut() -> F,
) -> P::Value {
    poll_until(within, probe)
        .await
        .unwrap_or_else(|seen| not_within(what, within, &seen))
}

/// [`eventually`] for code outside the async runtime: blocks the thread
/// between probes.
#[track_caller]
pub fn eventually_blocking<P: Probe>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> P,
) -> P::Value {
    let started = Instant::now();
    loop {
        match probe().found() {
            Ok(value) => return value,
            Err(seen) if started.elapsed() >= within => not_within(what, within, &seen),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

#[track_caller]
fn not_within(what: &str, within: Duration, seen: &str) -> ! {
    if seen.is_empty() {
        panic!("waited {within:?} for {what}, in vain");
    }
    panic!("waited {within:?} for {what}, in vain; last seen: {seen}")
}

fn wait_for_port(port: u16, timeout: Duration) {
    eventually_blocking(timeout, &format!("a listener on port {port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
    });
}

/// A topic name unique to this test run.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

/// A fresh category (`prefix`, made unique) whose topic exists on the
/// shared broker, with `partitions` partitions.
pub async fn category(prefix: &str, partitions: i32) -> String {
    let category = unique(prefix);
    create_topics(kafka(), &[&format!("events.{category}")], partitions)
        .await
        .expect("topic created");
    category
}

/// The config of a tenant `name` whose API key is `key`, with `extra` TOML
/// (its other settings, then sections such as `[[tenants.filters]]`).
pub fn tenant(name: &str, key: &str, extra: &str) -> String {
    format!(
        "[[tenants]]\nname = \"{name}\"\nkeys_sha256 = [\"{}\"]\n{extra}\n",
        key_hash(key)
    )
}

/// Creates topics on `brokers` (as an operator would).
pub async fn create_topics(brokers: &str, names: &[&str], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        result.map_err(|(topic, e)| anyhow!("creating {topic}: {e}"))?;
    }
    Ok(())
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// The value, parsed; `Null` for a strict JSON value with a number
    /// serde_json cannot hold (`1e999`: JSON's grammar has no range, and
    /// the node takes such events from clients as they are).
    pub value: serde_json::Value,
    /// The value's bytes.
    pub raw: Vec<u8>,
}

/// Reads exactly `count` records of `topic` from the beginning (waits up to
/// 30 s for them); an extra record, arriving within half a second after
/// them, is an error.
pub fn consume(brokers: &str, topic: &str, count: usize) -> anyhow::Result<Vec<Record>> {
    let records = read(brokers, topic, count, Duration::from_millis(500))?;
    if records.len() < count {
        bail!(
            "read {} of {count} records of {topic} in 30 s",
            records.len()
        );
    }
    if records.len() > count {
        bail!("{} records in {topic}, expected {count}", records.len());
    }
    Ok(records)
}

/// The client ids (`value.id`) of the records.
pub fn ids(records: &[Record]) -> std::collections::BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| r.value["id"].as_str().map(str::to_owned))
        .collect()
}

/// Reads every record of `topic` until none arrives for `idle` (counted
/// from the consumer's first record, or from when it was assigned the
/// topic's partitions, so a slow start does not end the read early).
pub fn consume_all(brokers: &str, topic: &str, idle: Duration) -> anyhow::Result<Vec<Record>> {
    read(brokers, topic, 0, idle)
}

/// Reads `topic` from the beginning: at least `at_least` records (for up to
/// 30 s), then on until no record arrives for `idle`.
fn read(
    brokers: &str,
    topic: &str,
    at_least: usize,
    idle: Duration,
) -> anyhow::Result<Vec<Record>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-e2e")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    // Before the first record, the window is at least a second from the
    // assignment, so that a consumer slow to start fetching is waited for.
    let mut records = Vec::new();
    let started = Instant::now();
    let mut deadline = Instant::now() + idle.max(Duration::from_secs(1));
    loop {
        let wanted = records.len() < at_least;
        let now = Instant::now();
        if (wanted && now - started > Duration::from_secs(30)) || (!wanted && now >= deadline) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        deadline = Instant::now() + idle;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(text),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(text).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default(),
            value: json_value(message.payload().unwrap_or_default())
                .context("record value is JSON")?,
            raw: message.payload().unwrap_or_default().to_vec(),
        });
    }
    Ok(records)
}

/// `bytes` as a JSON value: an error unless they are strict JSON (by
/// serde_json's grammar), `Null` for JSON whose numbers serde_json cannot
/// hold (its `IgnoredAny` checks the grammar without converting them).
fn json_value(bytes: &[u8]) -> serde_json::Result<serde_json::Value> {
    serde_json::from_slice(bytes).or_else(|e| {
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map(|_| serde_json::Value::Null)
            .map_err(|_| e)
    })
}

/// Each part's code and message (empty when it has none) of a batch's answer.
pub fn outcomes(answer: &serde_json::Value) -> Vec<(String, String)> {
    answer["parts"]
        .as_array()
        .expect("parts array")
        .iter()
        .map(|p| {
            (
                p["code"].as_str().unwrap().to_owned(),
                p["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// SHA-256 hex of an API key, as the config stores it.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A test certificate authority and a server certificate for localhost/127.0.0.1 it signed.
pub struct TestCerts {
    pub ca_pem: String,
    /// The CA certificate as a file (for `tls.client_ca_path`).
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    _dir: tempfile::TempDir,
}

/// A client certificate for mTLS.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// Hex SHA-256 of the certificate's DER (what `client_cert_sha256` takes).
    pub sha256: String,
}

impl TestCerts {
    pub fn new() -> anyhow::Result<TestCerts> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "weir test CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        let cert = params.signed_by(&key, &issuer)?;
        let dir = tempfile::tempdir()?;
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        std::fs::write(&ca_path, ca.pem())?;
        Ok(TestCerts {
            ca_pem: ca.pem(),
            ca_path,
            cert_path,
            key_path,
            issuer,
            _dir: dir,
        })
    }

    /// A client certificate signed by this CA.
    pub fn client(&self, name: &str) -> anyhow::Result<ClientCert> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ClientCert {
            sha256: hex::encode(Sha256::digest(cert.der())),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A running `weir serve` process, stopped on drop.
pub struct Node {
    child: Child,
    pub http: String,
    pub https: Option<String>,
    pub admin: Option<String>,
    /// The Kafka bootstrap address the node uses (the embedded broker's, when embedded).
    pub kafka: String,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The config file the node was started with (rewrite it to test reloads).
    pub config_path: PathBuf,
    /// Reads the node's log lines into `logs` until the process closes its stdout.
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node with `config` (TOML) and extra environment; listeners on
    /// ephemeral loopback ports unless the environment says otherwise.
    pub fn start(config: &str, env: &[(&str, &str)]) -> anyhow::Result<Node> {
        let (command, dir) = Self::command(config, env)?;
        Self::spawn(command, dir)
    }

    /// The command [`Node::start`] runs (to adjust before [`Node::spawn`]),
    /// and the directory of its config file.
    pub fn command(
        config: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<(Command, tempfile::TempDir)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, config)?;
        let mut command = Command::new(weir_bin());
        command
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .env("WEIR_LISTEN", "127.0.0.1:0")
            .env("WEIR_TLS_LISTEN", "127.0.0.1:0")
            .env("WEIR_ADMIN_LISTEN", "127.0.0.1:0")
            .env("WEIR_LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .env_remove("WEIR_KAFKA_BROKERS")
            .env_remove("WEIR_GEOIP_PATH");
        for (k, v) in env {
            command.env(k, v);
        }
        Ok((command, dir))
    }

    /// Starts a prepared command (e.g. the README's run script) and waits
    /// for it to listen and to have loaded its filters (`filters ready`:
    /// filters not in the compile cache load after the node listens).
    pub fn spawn(command: Command, dir: tempfile::TempDir) -> anyhow::Result<Node> {
        let (node, filters_ready) = Self::spawn_listening(command, dir)?;
        if filters_ready
            .recv_timeout(Duration::from_secs(900))
            .is_err()
        {
            bail!(
                "weir did not load its filters; its log:\n{}",
                node.log_text()
            );
        }
        Ok(node)
    }

    /// Starts a prepared command and waits for it to listen only; the
    /// receiver hears when it has loaded its filters.
    pub fn spawn_listening(
        mut command: Command,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<(Node, std::sync::mpsc::Receiver<()>)> {
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command.spawn().context("starting weir")?;
        let stdout = child.stdout.take().context("weir stdout")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("weir listening") {
                    let _ = tx.send(line.clone());
                }
                if line.contains("filters ready") {
                    let _ = ready_tx.send(());
                }
                if let Ok(mut logs) = sink.lock() {
                    logs.push(line);
                }
            }
        });
        // Building the release binary in the run script can take minutes.
        let line = match rx.recv_timeout(Duration::from_secs(900)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                bail!("weir did not start listening; its log:\n{logs}");
            }
        };
        let fields: serde_json::Value = serde_json::from_str(&line)?;
        let field = |name: &str| {
            fields[name]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let node = Node {
            config_path: dir.path().join("weir.toml"),
            http: field("http").context("http address in the log")?,
            https: field("https"),
            admin: field("admin"),
            kafka: field("kafka").context("kafka address in the log")?,
            child,
            logs,
            reader: Some(reader),
            _dir: dir,
        };
        Ok((node, ready_rx))
    }

    /// Sends a signal to the node.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Sends SIGTERM and waits for the exit status (for up to 60 s: longer
    /// fails the test); every line the node logged is in `logs` then.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        // try_wait's error ends the wait (`Some(Err)`); a timeout fails the test.
        let status = eventually_blocking(
            Duration::from_secs(60),
            "weir to exit after SIGTERM",
            || self.child.try_wait().transpose(),
        )?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(status)
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How to reach the node.
#[derive(Clone)]
pub enum Transport {
    Http,
    /// HTTPS trusting this CA (PEM); ALPN decides h2 or HTTP/1.1.
    Https {
        ca_pem: String,
        h2: bool,
    },
    /// HTTPS presenting a client certificate (mTLS), over HTTP/1.1.
    Mtls {
        ca_pem: String,
        client: ClientCert,
    },
}

/// An open connection to the node (HTTP/1.1 keep-alive or h2).
pub enum Connection {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    /// Opens a connection; over HTTPS, ALPN decides h2 or HTTP/1.1.
    pub async fn open(transport: &Transport, address: &str) -> anyhow::Result<Connection> {
        let tcp = tokio::net::TcpStream::connect(address).await?;
        match transport {
            Transport::Http => {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                Ok(Connection::H1(sender))
            }
            Transport::Https { .. } | Transport::Mtls { .. } => {
                let (ca_pem, h2, client) = match transport {
                    Transport::Https { ca_pem, h2 } => (ca_pem, *h2, None),
                    Transport::Mtls { ca_pem, client } => (ca_pem, false, Some(client)),
                    Transport::Http => unreachable!("matched above"),
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(
                    ca_pem.as_bytes(),
                ) {
                    roots.add(cert?)?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let builder = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots);
                let mut config = match client {
                    Some(client) => {
                        use rustls_pki_types::pem::PemObject;
                        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(
                            client.cert_pem.as_bytes(),
                        )
                        .collect::<Result<Vec<_>, _>>()?;
                        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(
                            client.key_pem.as_bytes(),
                        )?;
                        builder.with_client_auth_cert(chain, key)?
                    }
                    None => builder.with_no_client_auth(),
                };
                config.alpn_protocols = if h2 {
                    vec![b"h2".to_vec()]
                } else {
                    vec![b"http/1.1".to_vec()]
                };
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = rustls_pki_types::ServerName::try_from("localhost")?;
                let tls = connector.connect(name, tcp).await?;
                let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = hyper_util::rt::TokioIo::new(tls);
                if negotiated_h2 {
                    let (sender, conn) = hyper::client::conn::http2::handshake(
                        hyper_util::rt::TokioExecutor::new(),
                        io,
                    )
                    .await?;
                    tokio::spawn(conn);
                    Ok(Connection::H2(sender))
                } else {
                    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                    tokio::spawn(conn);
                    Ok(Connection::H1(sender))
                }
            }
        }
    }

    /// Sends one request on the connection and reads the whole answer.
    pub async fn send(&mut self, request: http::Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let response = match self {
            Connection::H1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Connection::H2(sender) => sender.send_request(request).await?,
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            version: parts.version,
        })
    }
}

/// Sends one request on a new connection and reads the whole answer.
pub async fn send(
    transport: &Transport,
    address: &str,
    request: http::Request<Full<Bytes>>,
) -> anyhow::Result<Answer> {
    Connection::open(transport, address)
        .await?
        .send(request)
        .await
}

/// A `POST /v1/batch` request with a JSON body and the given headers.
pub fn batch_request(
    key: Option<&str>,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::post("/v1/batch")
        .header("host", "localhost")
        .header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(body.into()))
        .expect("a valid request")
}

/// Posts a batch over plain HTTP.
pub async fn post(node: &Node, key: &str, body: impl Into<Bytes>) -> anyhow::Result<Answer> {
    send(
        &Transport::Http,
        &node.http,
        batch_request(Some(key), body, &[]),
    )
    .await
}

/// The samples of a node's `/metrics`, read from its admin listener.
pub async fn metrics(admin: &str) -> std::collections::BTreeMap<String, f64> {
    let answer = get(admin, "/metrics")
        .await
        .expect("the admin listener answers");
    scrape::parse(&String::from_utf8_lossy(&answer.body))
}

/// A `GET` over plain HTTP.
pub async fn get(address: &str, path: &str) -> anyhow::Result<Answer> {
    let request = http::Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))?;
    send(&Transport::Http, address, request).await
}

/// The contracts of `proto/`, checked against real answers and records.
pub mod contract {
    use std::sync::OnceLock;

    use super::root;

    fn openapi() -> &'static serde_json::Value {
        static DOC: OnceLock<serde_json::Value> = OnceLock::new();
        DOC.get_or_init(|| {
            let text = std::fs::read_to_string(root().join("proto/openapi.yaml"))
                .expect("proto/openapi.yaml");
            serde_yaml::from_str(&text).expect("openapi.yaml is YAML")
        })
    }

    /// Validates `instance` against `#/components/schemas/<name>` of the OpenAPI document.
    pub fn check_schema(name: &str, instance: &serde_json::Value) {
        // The whole document is the root resource, so its internal $refs resolve;
        // OpenAPI 3.1 schemas are JSON Schema 2020-12.
        let mut schema = openapi().clone();
        schema["$ref"] = format!("#/components/schemas/{name}").into();
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
        let validator = jsonschema::validator_for(&schema).expect("the OpenAPI schemas compile");
        assert_valid(
            &validator,
            instance,
            &format!("{name} of proto/openapi.yaml"),
        );
    }

    /// Fails with every violation and the instance when it does not match.
    fn assert_valid(validator: &jsonschema::Validator, instance: &serde_json::Value, what: &str) {
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "does not match {what}: {errors:?}\n{instance}"
        );
    }

    /// Checks that the OpenAPI document lists `status` for `method path`, and
    /// that the body matches the schema it names.
    pub fn check_answer(method: &str, path: &str, status: u16, body: &serde_json::Value) {
        let response = &openapi()["paths"][path][method]["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "proto/openapi.yaml has no {status} answer for {method} {path}"
        );
        let reference = response["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .expect("a schema $ref");
        let name = reference.rsplit('/').next().unwrap_or_default();
        check_schema(name, body);
    }

    /// Validates a Kafka record value against `proto/record.schema.json`.
    pub fn check_record(value: &serde_json::Value) {
        static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
        let validator = VALIDATOR.get_or_init(|| {
            let text = std::fs::read_to_string(root().join("proto/record.schema.json"))
                .expect("proto/record.schema.json");
            let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
            jsonschema::validator_for(&schema).expect("the record schema compiles")
        });
        assert_valid(validator, value, "proto/record.schema.json");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{eventually, eventually_blocking};

    #[tokio::test]
    async fn eventually_returns_what_the_first_successful_probe_found() {
        let mut probes = 0;
        let found = eventually(Duration::from_secs(5), "the third probe", || {
            probes += 1;
            let n = probes;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!((found, probes), (3, 3));
    }

    #[test]
    #[should_panic(expected = "waited 200ms for the impossible, in vain; last seen: no 3")]
    fn eventually_says_what_it_waited_for_how_long_and_what_it_saw() {
        let mut probes = 0;
        eventually_blocking(Duration::from_millis(200), "the impossible", || {
            probes += 1;
            Err::<(), _>(format!("no {}", probes.min(3)))
        });
    }
}
