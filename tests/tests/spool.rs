//! The spool (issue 17), against real tansu brokers of each test's own, real
//! node processes and real files: a node keeps accepting while Kafka is
//! away, loses nothing (killed, restarted, its files damaged), keeps each
//! device's events in order, and refuses cleanly when a tenant's share is
//! full.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use weir_e2e::scrape::sum;
use weir_e2e::{
    consume_all, contract, create_topics, eventually, eventually_blocking, free_port, get, metrics,
    post, tenant, unique, Broker, Node, Record,
};

const KEY: &str = "spool-key";
const OTHER_KEY: &str = "spool-other-key";
/// How long a request waits for Kafka before spooling, in these tests.
const WAIT_MS: u64 = 1000;

fn config(spool: &Path, extra: &str) -> String {
    format!(
        "[kafka]\ndelivery_timeout_ms = 8000\n[spool]\npath = \"{}\"\nwait_ms = {WAIT_MS}\n{extra}\n\n{}{}",
        spool.display(),
        tenant("acme", KEY, ""),
        tenant("other", OTHER_KEY, ""),
    )
}

/// A client posting one device's events in sequence, remembering what the
/// node accepted (answered `ok` or `spooled`), in order.
struct Client {
    device: String,
    /// Each batch under a device id of its own (`<device>-<first n>`), so
    /// that no batch waits behind another's spooled records.
    device_per_batch: bool,
    category: String,
    next: usize,
    accepted: Vec<String>,
    /// Status and time of every answer.
    answers: Vec<(u16, Duration)>,
    /// Each spooled event's spool record number.
    seqs: BTreeMap<String, u64>,
}

impl Client {
    fn new(device: &str, category: &str) -> Client {
        Client {
            device: device.into(),
            device_per_batch: false,
            category: category.into(),
            next: 0,
            accepted: Vec::new(),
            answers: Vec::new(),
            seqs: BTreeMap::new(),
        }
    }

    /// Posts a batch of `events` events; returns the answer's status and body.
    async fn send(&mut self, node: &Node, key: &str, events: usize) -> (u16, serde_json::Value) {
        let data: Vec<_> = (self.next..self.next + events)
            .map(|n| json!({"id": format!("{}-{n:05}", self.device), "n": n, "pad": "x".repeat(200)}))
            .collect();
        let device = match self.device_per_batch {
            true => format!("{}-{}", self.device, self.next),
            false => self.device.clone(),
        };
        self.next += events;
        let body = json!({"meta": {"category": self.category, "device_id": device}, "data": data});
        let started = Instant::now();
        let answer = post(node, key, body.to_string()).await.unwrap();
        self.answers.push((answer.status, started.elapsed()));
        let json = answer.json();
        contract::check_answer("post", "/v1/batch", answer.status, &json);
        for part in json["parts"].as_array().unwrap() {
            let id = part["id"].as_str().unwrap().to_owned();
            match part["code"].as_str() {
                Some("ok") => self.accepted.push(id),
                Some("spooled") => {
                    self.seqs
                        .insert(id.clone(), part["spool_seq"].as_u64().unwrap());
                    self.accepted.push(id);
                }
                _ => {}
            }
        }
        (answer.status, json)
    }

    /// Posts batches of `events` until one is refused 503 (at most `tries`);
    /// every answer before must accept (202, or 207 for a batch cut short).
    /// The refusal's body.
    async fn until_refused(
        &mut self,
        node: &Node,
        events: usize,
        tries: usize,
    ) -> serde_json::Value {
        for _ in 0..tries {
            let (status, json) = self.send(node, KEY, events).await;
            if status == 503 {
                return json;
            }
            assert!([202, 207].contains(&status), "{json}");
        }
        panic!("{}: no 503 in {tries} batches", self.device);
    }
}

/// Waits until every id is in `topic`; returns its records.
fn all_arrive(brokers: &str, topic: &str, ids: &BTreeSet<String>) -> Vec<Record> {
    eventually_blocking(
        Duration::from_secs(60),
        "every accepted event in Kafka",
        || {
            let records = consume_all(brokers, topic, Duration::from_millis(500)).unwrap();
            let seen: BTreeSet<String> = records
                .iter()
                .filter_map(|r| r.value["id"].as_str().map(str::to_owned))
                .collect();
            let missing = ids.difference(&seen).count();
            match missing {
                0 => Ok(records),
                n => Err(format!("{n} of {} not yet", ids.len())),
            }
        },
    )
}

/// Per device, the first copy of each event comes in the order accepted.
fn assert_in_order_per_device(records: &[Record], clients: &[Client]) {
    let mut by_partition: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut seen = BTreeSet::new();
    let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for records in by_partition.values_mut() {
        records.sort_by_key(|r| r.offset);
        for r in records.iter() {
            let id = r.value["id"].as_str().unwrap().to_owned();
            let device = r.value["meta"]["device_id"].as_str().unwrap().to_owned();
            if seen.insert(id.clone()) {
                order.entry(device).or_default().push(id);
            }
        }
    }
    for client in clients {
        assert_eq!(
            order.get(&client.device),
            Some(&client.accepted),
            "device {}: events in Kafka out of the order they were accepted",
            client.device
        );
    }
}

/// The broker frozen under load from 4 clients: every answer is 200, 202 or
/// 207 within the wait plus a little; the broker back, every accepted event
/// reaches Kafka, per device in order, duplicates counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_broker_is_spooled_and_every_event_arrives_in_order() {
    let broker = Broker::start();
    let category = unique("spool_frozen");
    let topic = format!("events.{category}");
    create_topics(&broker.address, &[&topic], 4).await.unwrap();
    let spool = tempfile::tempdir().unwrap();
    let node = Node::start(
        &config(spool.path(), ""),
        &[("WEIR_KAFKA_BROKERS", &broker.address)],
    )
    .unwrap();
    let admin = node.admin.clone().unwrap();
    let mut clients: Vec<Client> = (0..4)
        .map(|i| Client::new(&format!("dev{i}"), &category))
        .collect();

    // Kafka up: straight to Kafka.
    for client in &mut clients {
        for _ in 0..2 {
            assert_eq!(client.send(&node, KEY, 5).await.0, 200);
        }
    }
    // Frozen: each client sends until two of its batches were spooled.
    broker.freeze();
    let sending = clients.iter_mut().map(|client| async {
        let mut spooled = 0;
        for _ in 0..30 {
            if client.send(&node, KEY, 5).await.0 == 202 {
                spooled += 1;
            }
            if spooled == 2 {
                break;
            }
        }
        assert_eq!(spooled, 2, "{}: {:?}", client.device, client.answers);
    });
    futures::future::join_all(sending).await;
    let ready = get(&admin, "/readyz").await.unwrap();
    assert_eq!(ready.status, 200, "spooling, the node stays ready");
    let detail = ready.json()["spool"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("spooling:"), "{detail}");
    // Back: new events go behind the spooled ones of their device.
    broker.thaw();
    let sending = clients.iter_mut().map(|client| async {
        for _ in 0..3 {
            client.send(&node, KEY, 5).await;
        }
    });
    futures::future::join_all(sending).await;

    for client in &clients {
        for &(status, took) in &client.answers {
            assert!(
                [200, 202, 207].contains(&status),
                "{}: {:?}",
                client.device,
                client.answers
            );
            assert!(
                took < Duration::from_millis(WAIT_MS + 2000),
                "{}: an answer took {took:?}",
                client.device
            );
        }
    }
    let accepted: BTreeSet<String> = clients.iter().flat_map(|c| c.accepted.clone()).collect();
    let records = all_arrive(&broker.address, &topic, &accepted);
    assert_in_order_per_device(&records, &clients);
    // Spooled records carry the header that says so.
    let spooled: BTreeSet<&String> = clients.iter().flat_map(|c| c.seqs.keys()).collect();
    assert!(!spooled.is_empty());
    for r in &records {
        let id = r.value["id"].as_str().unwrap().to_owned();
        if spooled.contains(&id) && r.headers.contains_key("weir-spooled-at") {
            assert_eq!(r.headers["weir-tenant"], "acme");
            assert!(
                r.headers["traceparent"].starts_with("00-"),
                "{:?}",
                r.headers
            );
        }
    }
    let twice = records.len() - accepted.len();
    let samples = eventually(Duration::from_secs(10), "the spool empty", || async {
        let samples = metrics(&admin).await;
        match sum(&samples, "weir_spool_records", &[]) {
            0.0 => Ok(samples),
            n => Err(format!("{n} records")),
        }
    })
    .await;
    let spooled_total = sum(
        &samples,
        "weir_spool_events_total",
        &[("outcome", "spooled")],
    );
    assert!(spooled_total >= spooled.len() as f64, "{spooled_total}");
    let duplicates = sum(
        &samples,
        "weir_spool_events_total",
        &[("outcome", "duplicate")],
    );
    assert_eq!(
        duplicates, twice as f64,
        "events in Kafka twice: {twice}, counted {duplicates}"
    );
    let ready = get(&admin, "/readyz").await.unwrap();
    assert_eq!(ready.json()["spool"], "idle");
}

/// The spool's segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Spools batches on a node whose broker is away, then kills it (SIGKILL).
async fn spool_and_kill(spool: &Path, port: u16, extra: &str, batches: usize) -> Client {
    let brokers = format!("127.0.0.1:{port}");
    let mut node = Node::start(&config(spool, extra), &[("WEIR_KAFKA_BROKERS", &brokers)]).unwrap();
    let mut client = Client::new("dev-k", &unique("spool_killed"));
    for _ in 0..batches {
        let (status, json) = client.send(&node, KEY, 20).await;
        assert_eq!(status, 202, "{json}");
    }
    node.signal(libc::SIGKILL);
    eventually_blocking(Duration::from_secs(10), "the node to die", || {
        !node.is_running()
    });
    client
}

/// Killed with events spooled and the broker away, restarted with a new
/// broker at the same address: every spooled event reaches Kafka.
#[tokio::test(flavor = "multi_thread")]
async fn spooled_events_survive_a_killed_node_and_reach_a_new_broker() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let client = spool_and_kill(spool.path(), port, "", 5).await;
    assert_eq!(client.seqs.len(), 100);

    let broker = Broker::start_on(port);
    let topic = format!("events.{}", client.category);
    create_topics(&broker.address, &[&topic], 2).await.unwrap();
    let node = Node::start(
        &config(spool.path(), ""),
        &[("WEIR_KAFKA_BROKERS", &broker.address)],
    )
    .unwrap();
    let accepted: BTreeSet<String> = client.accepted.iter().cloned().collect();
    let records = all_arrive(&broker.address, &topic, &accepted);
    assert_in_order_per_device(&records, std::slice::from_ref(&client));
    for r in &records {
        assert!(r.headers.contains_key("weir-spooled-at"), "{:?}", r.headers);
        assert_eq!(r.key.as_deref(), Some("acme:dev-k"));
    }
    let admin = node.admin.clone().unwrap();
    eventually(Duration::from_secs(10), "the spool empty", || async {
        get(&admin, "/readyz").await.unwrap().json()["spool"] == "idle"
    })
    .await;
}

/// A segment's tail cut, a byte flipped mid-segment, a segment deleted: the
/// node starts, reports the damage, replays every record it still has, and
/// serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_spool_replays_its_good_records_and_serves() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let client = spool_and_kill(spool.path(), port, "segment_bytes = 65536", 12).await;
    let files = segments(spool.path());
    assert!(files.len() >= 4, "{files:?}");
    // The first segment: a byte flipped in the middle.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();
    // The second: gone.
    std::fs::remove_file(&files[1]).unwrap();
    // The last: its tail cut at a byte that depends on the run.
    let last = files.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let cut = len / 2 + u64::from(std::process::id()) % (len / 4);
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(cut)
        .unwrap();
    // Segments are named by their first record: what lies in the
    // untouched ones must all arrive.
    let first_of = |p: &Path| -> u64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    let untouched = first_of(&files[2])..first_of(last);
    let intact: BTreeSet<String> = client
        .seqs
        .iter()
        .filter(|(_, seq)| untouched.contains(seq))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!intact.is_empty());

    let broker = Broker::start_on(port);
    let topic = format!("events.{}", client.category);
    create_topics(&broker.address, &[&topic], 2).await.unwrap();
    let node = Node::start(
        &config(spool.path(), "segment_bytes = 65536"),
        &[("WEIR_KAFKA_BROKERS", &broker.address)],
    )
    .unwrap();
    let records = all_arrive(&broker.address, &topic, &intact);
    let sent: BTreeSet<String> = client.accepted.iter().cloned().collect();
    for r in &records {
        assert!(
            sent.contains(r.value["id"].as_str().unwrap()),
            "a record never accepted"
        );
    }
    let log = node.log_text();
    assert!(log.contains("spool opened with damage"), "{log}");
    let admin = node.admin.clone().unwrap();
    let corrupt = sum(
        &metrics(&admin).await,
        "weir_spool_events_total",
        &[("outcome", "corrupt")],
    );
    assert!(corrupt >= 1.0, "{corrupt}");
    // And it serves.
    let mut fresh = Client::new("dev-new", &client.category);
    assert_eq!(fresh.send(&node, KEY, 2).await.0, 200);
}

/// One tenant past its share: its uploads get 503 + Retry-After, nothing of
/// them said accepted; another tenant still spools.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_past_its_share_is_refused_while_others_spool() {
    let spool = tempfile::tempdir().unwrap();
    let brokers = format!("127.0.0.1:{}", free_port());
    let node = Node::start(
        &config(spool.path(), "tenant_max_bytes = 65536"),
        &[("WEIR_KAFKA_BROKERS", &brokers)],
    )
    .unwrap();
    let category = unique("spool_full");
    let mut greedy = Client::new("dev-g", &category);
    let refused = greedy.until_refused(&node, 20, 20).await;
    for part in refused["parts"].as_array().unwrap() {
        assert_eq!(part["code"], "delivery_failed", "{refused}");
        assert_eq!(part["retryable"], true);
        let message = part["message"].as_str().unwrap();
        assert!(
            message.contains("spool share of tenant acme full"),
            "{message}"
        );
    }
    let mut other = Client::new("dev-o", &category);
    let (status, json) = other.send(&node, OTHER_KEY, 5).await;
    assert_eq!(status, 202, "{json}");
    for part in json["parts"].as_array().unwrap() {
        assert_eq!(part["code"], "spooled");
        assert_eq!(part["retryable"], false);
        assert!(
            part["node"].is_string() && part["spool_seq"].is_u64(),
            "{part}"
        );
        assert!(part.get("topic").is_none());
    }
}

/// Posts until a batch goes straight to Kafka (200), for up to 90 s; every
/// answer before must be one of `meanwhile`.
async fn until_written(node: &Node, client: &mut Client, meanwhile: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, json) = client.send(node, KEY, 5).await;
        if status == 200 {
            return;
        }
        assert!(meanwhile.contains(&status), "{status}: {json}");
        if Instant::now() > deadline {
            let log = node.log_text();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("\"DEBUG\"")).collect();
            panic!(
                "never written again: {json}\nthe node's log:\n{}",
                tail[tail.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// The broker replaced by a new one at the same address (its state gone,
/// the topic made again) under a running node: its producer stops
/// delivering while the cluster answers, so the node builds a new one by
/// itself. With a spool, nothing is refused meanwhile and every event
/// arrives; without one, uploads are refused retryable until it recovers.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_broker_gets_the_node_a_new_producer() {
    for spooled in [true, false] {
        let port = free_port();
        let broker = Broker::start_on(port);
        let category = unique("spool_replaced");
        let topic = format!("events.{category}");
        create_topics(&broker.address, &[&topic], 1).await.unwrap();
        let spool = tempfile::tempdir().unwrap();
        let mut config = config(spool.path(), "");
        if !spooled {
            config = config.replace(&format!("path = \"{}\"\n", spool.path().display()), "");
        }
        let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", &broker.address)]).unwrap();
        let mut client = Client::new("dev-r", &category);
        assert_eq!(client.send(&node, KEY, 5).await.0, 200);

        drop(broker);
        let broker = Broker::start_on(port);
        create_topics(&broker.address, &[&topic], 1).await.unwrap();
        // A device's batches keep their order: with one device, a batch is
        // spooled while any earlier one is, and a client sending without
        // pause can outrun the replay for ever. What is waited for here is
        // the new producer, so each batch has a device of its own.
        client.device_per_batch = true;
        match spooled {
            true => until_written(&node, &mut client, &[202]).await,
            false => until_written(&node, &mut client, &[503]).await,
        }
        let admin = node.admin.clone().unwrap();
        let rebuilds = sum(
            &metrics(&admin).await,
            "weir_kafka_producer_rebuilds_total",
            &[],
        );
        assert!(rebuilds >= 1.0, "spool {spooled}: {rebuilds} new producers");
        if spooled {
            // Accepted before the replacement: in the old broker, gone.
            let after: BTreeSet<String> = client.accepted[5..].iter().cloned().collect();
            let records = all_arrive(&broker.address, &topic, &after);
            let seen: BTreeSet<String> = records
                .iter()
                .filter_map(|r| r.value["id"].as_str().map(str::to_owned))
                .collect();
            assert!(after.is_subset(&seen));
        }
    }
}

/// A disk that fills (the node's file size limit, RLIMIT_FSIZE, stands for
/// a full disk: writes past it fail): uploads Kafka cannot take are refused
/// 503 retryable, `/readyz` says why, and nothing answered `spooled` is
/// lost: restarted without the limit and with a broker, every spooled
/// event arrives.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_cleanly_and_loses_nothing() {
    use std::os::unix::process::CommandExt;
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let extra = "segment_bytes = 1048576";
    let env = [("WEIR_KAFKA_BROKERS", brokers.as_str())];
    let (mut command, dir) = Node::command(&config(spool.path(), extra), &env).unwrap();
    // SAFETY: setrlimit and signal are async-signal-safe; nothing else
    // runs between fork and exec. An ignored SIGXFSZ stays ignored across
    // exec, so a write past the limit fails (EFBIG) instead of killing.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256 << 10,
                rlim_max: 256 << 10,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut node = Node::spawn(command, dir).unwrap();
    let mut client = Client::new("dev-d", &unique("spool_disk"));
    let refused = client.until_refused(&node, 20, 40).await;
    assert!(!client.seqs.is_empty(), "some events spooled first");
    for part in refused["parts"].as_array().unwrap() {
        assert_eq!(part["code"], "delivery_failed", "{refused}");
        assert_eq!(part["retryable"], true);
        let message = part["message"].as_str().unwrap();
        assert!(message.contains("the spool could not hold it"), "{message}");
    }
    let ready = get(node.admin.as_ref().unwrap(), "/readyz").await.unwrap();
    let detail = ready.json()["spool"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("cannot append"), "{detail}");
    assert_eq!(
        ready.status, 503,
        "Kafka away and the spool full: not ready"
    );
    node.signal(libc::SIGKILL);
    eventually_blocking(Duration::from_secs(10), "the node to die", || {
        !node.is_running()
    });

    let broker = Broker::start_on(port);
    let topic = format!("events.{}", client.category);
    create_topics(&broker.address, &[&topic], 1).await.unwrap();
    let _node = Node::start(
        &config(spool.path(), extra),
        &[("WEIR_KAFKA_BROKERS", &broker.address)],
    )
    .unwrap();
    let spooled: BTreeSet<String> = client.seqs.keys().cloned().collect();
    let records = all_arrive(&broker.address, &topic, &spooled);
    assert_in_order_per_device(&records, std::slice::from_ref(&client));
}

/// SIGTERM with events spooled and Kafka away: the node stops cleanly, says
/// how many events stay on disk, and the next start finds them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_node_keeps_its_spool_and_says_so() {
    let spool = tempfile::tempdir().unwrap();
    let brokers = format!("127.0.0.1:{}", free_port());
    let env = [("WEIR_KAFKA_BROKERS", brokers.as_str())];
    let mut node = Node::start(&config(spool.path(), ""), &env).unwrap();
    let mut client = Client::new("dev-t", &unique("spool_stop"));
    for _ in 0..3 {
        assert_eq!(client.send(&node, KEY, 10).await.0, 202);
    }
    assert!(node.terminate().unwrap().success());
    let log = node.log_text();
    let stop = log
        .lines()
        .find(|l| l.contains("events stay on disk for the next start"))
        .unwrap_or_else(|| panic!("no stop line in:\n{log}"));
    let stop: serde_json::Value = serde_json::from_str(stop).unwrap();
    assert_eq!(stop["records"], 30, "{stop}");
    // librdkafka logs its refused connections; the node itself nothing.
    let own_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\"") && l.contains("\"target\":\"weir"))
        .collect();
    assert!(own_errors.is_empty(), "{own_errors:?}");

    let node = Node::start(&config(spool.path(), ""), &env).unwrap();
    let samples = metrics(node.admin.as_ref().unwrap()).await;
    assert_eq!(
        sum(&samples, "weir_spool_records", &[("tenant", "acme")]),
        30.0
    );
}

/// A spooled record Kafka keeps refusing (its topic is missing on the
/// cluster that comes back) holds back its own key only: the other
/// spooled events go on to Kafka, and once the topic exists, the held ones
/// follow. No wedge.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_kafka_keeps_refusing_holds_back_only_its_own_key() {
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let env = [("WEIR_KAFKA_BROKERS", brokers.as_str())];
    let node = Node::start(&config(spool.path(), ""), &env).unwrap();
    // Spooled with Kafka away: one device to a topic that will be missing,
    // more events than replay sends at once, then another device to one
    // that will exist.
    let mut orphan = Client::new("dev-orphan", &unique("spool_missing"));
    let mut other = Client::new("dev-other", &unique("spool_present"));
    for _ in 0..12 {
        assert_eq!(orphan.send(&node, KEY, 100).await.0, 202);
    }
    for _ in 0..2 {
        assert_eq!(other.send(&node, KEY, 5).await.0, 202);
    }
    let broker = Broker::start_on(port);
    let present = format!("events.{}", other.category);
    create_topics(&broker.address, &[&present], 1)
        .await
        .unwrap();
    let accepted: BTreeSet<String> = other.accepted.iter().cloned().collect();
    all_arrive(&broker.address, &present, &accepted);
    let admin = node.admin.clone().unwrap();
    let orphans = orphan.accepted.len() as f64;
    eventually(
        Duration::from_secs(30),
        "only the orphan's events left in the spool",
        || async {
            match sum(&metrics(&admin).await, "weir_spool_records", &[]) {
                n if n == orphans => Ok(()),
                n => Err(format!("{n} records, {orphans} orphans")),
            }
        },
    )
    .await;

    let missing = format!("events.{}", orphan.category);
    create_topics(&broker.address, &[&missing], 1)
        .await
        .unwrap();
    let accepted: BTreeSet<String> = orphan.accepted.iter().cloned().collect();
    let records = all_arrive(&broker.address, &missing, &accepted);
    assert_in_order_per_device(&records, std::slice::from_ref(&orphan));
}
