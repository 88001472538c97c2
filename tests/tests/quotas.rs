//! Region-wide quotas (issue 18), against a real `redis-server` of each
//! test's own and real node processes: a tenant's rates hold across the
//! nodes that share the Redis, a tenant on one node gets its whole quota
//! there, and a node whose Redis dies or freezes keeps answering on its
//! share of each limit and comes back to region-wide limits by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use weir_e2e::scrape::sum;
use weir_e2e::{
    batch_request, category, eventually, get, kafka, metrics, send, tenant, unique, Connection,
    Node, Redis, Transport,
};

const KEY: &str = "quota-key";

/// A node of the region: the shared Kafka broker, the tenant with `limits`,
/// `quotas` (TOML lines of `[quotas]`, none: per-node limits).
fn start_node(limits: &str, quotas: Option<&str>) -> Node {
    let quotas = quotas
        .map(|q| format!("[quotas]\n{q}\nsync_ms = 200\n"))
        .unwrap_or_default();
    let config = format!(
        "[telemetry]\nregion = \"test-eu\"\n{quotas}\n{}",
        tenant("acme", KEY, limits)
    );
    Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap()
}

/// `n` nodes sharing `redis` (or each on its own, without).
fn region(n: usize, limits: &str, redis: Option<&Redis>) -> Vec<Node> {
    let quotas = redis.map(|r| format!("redis_url = \"{}\"", r.url));
    (0..n)
        .map(|_| start_node(limits, quotas.as_deref()))
        .collect()
}

/// What clients hammering the nodes were answered.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    limited: u64,
    /// Anything else: a status other than 200 and 429, or no answer.
    other: Vec<String>,
    /// The longest a request waited for its answer.
    slowest: Duration,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.limited += other.limited;
        self.other.extend(other.other);
        self.slowest = self.slowest.max(other.slowest);
    }
}

/// `clients` keep-alive clients per node post `body` as fast as answers
/// come, for `duration`.
async fn hammer(nodes: &[&Node], clients: usize, body: Bytes, duration: Duration) -> Tally {
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    for node in nodes {
        for _ in 0..clients {
            let (address, body) = (node.http.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut connection = None;
                while Instant::now() < until {
                    if connection.is_none() {
                        match Connection::open(&Transport::Http, &address).await {
                            Ok(c) => connection = Some(c),
                            Err(e) => {
                                tally.other.push(format!("connect: {e}"));
                                continue;
                            }
                        }
                    }
                    let Some(open) = connection.as_mut() else {
                        continue;
                    };
                    let started = Instant::now();
                    let answer = open.send(batch_request(Some(KEY), body.clone(), &[])).await;
                    tally.slowest = tally.slowest.max(started.elapsed());
                    match answer {
                        Ok(a) if a.status == 200 => tally.ok += 1,
                        Ok(a) if a.status == 429 => tally.limited += 1,
                        Ok(a) => tally.other.push(format!(
                            "{}: {}",
                            a.status,
                            String::from_utf8_lossy(&a.body)
                        )),
                        Err(e) => {
                            tally.other.push(format!("no answer: {e}"));
                            connection = None;
                        }
                    }
                }
                tally
            }));
        }
    }
    let mut total = Tally::default();
    for task in tasks {
        total.add(task.await.unwrap());
    }
    total
}

/// A batch of `events` small events.
fn body(category: &str, events: usize) -> Bytes {
    let data: Vec<_> = (0..events)
        .map(|i| json!({"id": format!("e{i}")}))
        .collect();
    Bytes::from(json!({"meta": {"category": category}, "data": data}).to_string())
}

fn within(admitted: f64, expected: f64, tolerance: f64) -> bool {
    (admitted - expected).abs() <= expected * tolerance
}

async fn readiness(node: &Node) -> serde_json::Value {
    get(node.admin.as_deref().unwrap(), "/readyz")
        .await
        .unwrap()
        .json()
}

/// Waits until every node counts all of them (each counted the others
/// at its heartbeat).
async fn all_counted(nodes: &[Node]) {
    let expected = format!("region-wide: {} node(s)", nodes.len());
    for node in nodes {
        eventually(Duration::from_secs(5), &expected, || async {
            readiness(node).await["quotas"]
                .as_str()
                .is_some_and(|q| q.starts_with(&expected))
        })
        .await;
    }
}

/// Two clients per node post `body` for 4 s, in the background; returned
/// once the first node has leased budget from Redis.
async fn hammer_once_leased(nodes: &Arc<Vec<Node>>, body: Bytes) -> tokio::task::JoinHandle<Tally> {
    let run = {
        let nodes = nodes.clone();
        tokio::spawn(async move {
            hammer(
                &nodes.iter().collect::<Vec<_>>(),
                2,
                body,
                Duration::from_secs(4),
            )
            .await
        })
    };
    eventually(Duration::from_secs(10), "leases taken", || async {
        sum(
            &metrics(nodes[0].admin.as_deref().unwrap()).await,
            "weir_quota_redis_calls_total",
            &[("call", "lease"), ("outcome", "ok")],
        ) > 0.0
    })
    .await;
    run
}

async fn synced(node: &Node) -> f64 {
    sum(
        &metrics(node.admin.as_deref().unwrap()).await,
        "weir_quota_region_synced",
        &[],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_admit_one_quota_between_them_and_without_redis_three() {
    let category = category("quota", 1).await;
    let limits = "requests_per_second = 50\nrequests_burst = 50";
    let seconds = 5.0;
    let expected = 50.0 + 50.0 * seconds;
    let body = body(&category, 1);

    let redis = Redis::start();
    let nodes = region(3, limits, Some(&redis));
    all_counted(&nodes).await;
    let shared = hammer(
        &nodes.iter().collect::<Vec<_>>(),
        3,
        body.clone(),
        Duration::from_secs_f64(seconds),
    )
    .await;
    assert!(shared.other.is_empty(), "{:?}", shared.other);
    assert!(shared.limited > 0);
    assert!(
        within(shared.ok as f64, expected, 0.10),
        "admitted {} across three nodes sharing Redis; the quota allows {expected}",
        shared.ok
    );
    // Each node took its budget from Redis (leases), not from itself alone.
    for node in &nodes {
        let m = metrics(node.admin.as_deref().unwrap()).await;
        assert!(
            sum(
                &m,
                "weir_quota_redis_calls_total",
                &[("call", "lease"), ("outcome", "ok")]
            ) > 0.0
        );
        assert_eq!(sum(&m, "weir_quota_nodes", &[]), 3.0);
    }
    // The keys say whose they are, expire, and hold no key or event (a
    // bucket untouched for its refill time may have expired already: full).
    let keys = redis.cli(&["--scan", "--pattern", "*"]);
    let keys: Vec<&str> = keys.lines().collect();
    for expected in ["weir:test-eu:nodes", "weir:test-eu:{acme}:requests"] {
        assert!(keys.contains(&expected), "{keys:?}");
    }
    for key in keys {
        assert!(
            [
                "weir:test-eu:nodes",
                "weir:test-eu:{acme}:bytes",
                "weir:test-eu:{acme}:events",
                "weir:test-eu:{acme}:requests"
            ]
            .contains(&key),
            "{key}"
        );
        let ttl: i64 = redis.cli(&["PTTL", key]).parse().unwrap();
        // -2: expired since the scan; -1 would be a key without expiry.
        assert!(ttl > 0 || ttl == -2, "{key} has no expiry: {ttl}");
    }
    drop(nodes);

    eprintln!(
        "three nodes sharing Redis admitted {} (quota {expected})",
        shared.ok
    );
    // The same run without Redis: each node enforces the whole quota.
    let alone = region(3, limits, None);
    let apart = hammer(
        &alone.iter().collect::<Vec<_>>(),
        3,
        body,
        Duration::from_secs_f64(seconds),
    )
    .await;
    assert!(apart.other.is_empty(), "{:?}", apart.other);
    eprintln!("three nodes without Redis admitted {}", apart.ok);
    assert!(
        apart.ok as f64 >= 2.5 * expected,
        "without Redis three nodes admit about 3x the quota: {} (with Redis {})",
        apart.ok,
        shared.ok
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_on_one_node_of_three_gets_its_whole_quota() {
    let category = category("quota", 1).await;
    let redis = Redis::start();
    let nodes = region(
        3,
        "requests_per_second = 50\nrequests_burst = 50",
        Some(&redis),
    );
    all_counted(&nodes).await;
    let seconds = 4.0;
    let tally = hammer(
        &[&nodes[1]],
        4,
        body(&category, 1),
        Duration::from_secs_f64(seconds),
    )
    .await;
    assert!(tally.other.is_empty(), "{:?}", tally.other);
    let expected = 50.0 + 50.0 * seconds;
    eprintln!("one node of three admitted {} (quota {expected})", tally.ok);
    assert!(
        within(tally.ok as f64, expected, 0.10),
        "one node of three admitted {}; the whole quota is {expected}, a third of it {}",
        tally.ok,
        expected / 3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_saw_no_traffic_refuses_honestly_once_the_region_spent_the_quota() {
    let category = category("quota", 1).await;
    let redis = Redis::start();
    // A token every 4 s: nothing comes back while the test runs.
    let nodes = region(
        2,
        "requests_per_second = 0.25\nrequests_burst = 2",
        Some(&redis),
    );
    all_counted(&nodes).await;
    let post = |node: &Node| {
        let address = node.http.clone();
        let body = body(&category, 1);
        async move {
            send(
                &Transport::Http,
                &address,
                batch_request(Some(KEY), body, &[]),
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(post(&nodes[0]).await.status, 200);
    assert_eq!(post(&nodes[0]).await.status, 200);
    // The other node has had no request of this tenant: the region has.
    let refused = post(&nodes[1]).await;
    assert_eq!(refused.status, 429);
    let json = refused.json();
    weir_e2e::contract::check_answer("post", "/v1/batch", 429, &json);
    assert_eq!(
        (json["error"].as_str(), json["limit"].as_str()),
        (Some("rate_limited"), Some("requests"))
    );
    // When the region's bucket has a token again, as Redis' clock says.
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=4).contains(&retry_after), "{retry_after}");
    let retry_ms = json["retry_after_ms"].as_u64().unwrap();
    assert!(
        retry_ms > 3000 && retry_ms <= retry_after * 1000,
        "{retry_ms}"
    );
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"requests\";q=0.25;w=1")
    );
    assert_eq!(
        refused.header("ratelimit"),
        Some(format!("\"requests\";r=0;t={retry_after}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_rate_is_region_wide() {
    let category = category("quota", 1).await;
    let redis = Redis::start();
    let nodes = region(
        2,
        "events_per_second = 1000\nevents_burst = 1000",
        Some(&redis),
    );
    let seconds = 4.0;
    let per_batch = 20;
    let tally = hammer(
        &nodes.iter().collect::<Vec<_>>(),
        3,
        body(&category, per_batch),
        Duration::from_secs_f64(seconds),
    )
    .await;
    assert!(tally.other.is_empty(), "{:?}", tally.other);
    let events = (tally.ok * per_batch as u64) as f64;
    let expected = 1000.0 + 1000.0 * seconds;
    eprintln!("two nodes admitted {events} events (quota {expected})");
    assert!(
        within(events, expected, 0.10),
        "admitted {events} events on two nodes; the quota allows {expected}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_byte_rate_is_region_wide() {
    let category = category("quota", 1).await;
    let redis = Redis::start();
    let nodes = region(
        2,
        "bytes_per_second = 100000\nbytes_burst = 100000\nmax_body_bytes = 100000\nmax_decompressed_bytes = 100000",
        Some(&redis),
    );
    let seconds = 4.0;
    let body = body(&category, 40);
    let tally = hammer(
        &nodes.iter().collect::<Vec<_>>(),
        3,
        body.clone(),
        Duration::from_secs_f64(seconds),
    )
    .await;
    assert!(tally.other.is_empty(), "{:?}", tally.other);
    // A body is charged its length, and one byte before it is read.
    let bytes = (tally.ok * (body.len() as u64 + 1)) as f64;
    let expected = 100_000.0 + 100_000.0 * seconds;
    eprintln!("two nodes admitted {bytes} bytes (quota {expected})");
    assert!(
        within(bytes, expected, 0.10),
        "admitted {bytes} bytes ({} bodies of {}) on two nodes; the quota allows {expected}",
        tally.ok,
        body.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_run_fails_no_request_and_the_region_comes_back() {
    let category = category("quota", 1).await;
    let redis = Redis::start();
    let nodes = Arc::new(region(
        2,
        "requests_per_second = 100\nrequests_burst = 100",
        Some(&redis),
    ));
    all_counted(&nodes).await;
    let body = body(&category, 1);
    // Kill it once the nodes have leased from it.
    let run = hammer_once_leased(&nodes, body).await;
    let port = redis.kill();
    for node in nodes.iter() {
        let detail = eventually(Duration::from_secs(10), "the node on its share", || async {
            let quotas = readiness(node).await["quotas"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if quotas.starts_with("per-node share (1/2") {
                Ok(quotas)
            } else {
                Err(quotas)
            }
        })
        .await;
        assert!(detail.contains("Redis at redis://127.0.0.1"), "{detail}");
        // Still ready: it still enforces every limit.
        let public = get(&node.http, "/readyz").await.unwrap();
        assert_eq!(public.status, 200);
        assert_eq!(public.json()["quotas"], "node-share");
        assert_eq!(synced(node).await, 0.0);
    }
    let tally = run.await.unwrap();
    assert!(
        tally.other.is_empty(),
        "requests failed because Redis died: {:?}",
        tally.other
    );
    assert!(tally.ok > 0 && tally.limited > 0, "{tally:?}");
    for node in nodes.iter() {
        let log = node.log_text();
        assert_eq!(log.matches("Redis does not answer").count(), 1, "{log}");
    }

    // Back on the same port: region-wide again, by itself.
    let _redis = Redis::start_on(port);
    for node in nodes.iter() {
        eventually(Duration::from_secs(5), "region-wide again", || async {
            readiness(node).await["quotas"]
                .as_str()
                .is_some_and(|q| q.starts_with("region-wide"))
        })
        .await;
        assert_eq!(synced(node).await, 1.0);
        assert!(node.log_text().contains("tenants' limits are region-wide"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_redis_holds_no_request_beyond_the_timeout() {
    let category = category("quota", 1).await;
    let redis = Redis::start();
    let nodes = Arc::new(region(
        2,
        "requests_per_second = 100\nrequests_burst = 20",
        Some(&redis),
    ));
    all_counted(&nodes).await;
    let run = hammer_once_leased(&nodes, body(&category, 1)).await;
    redis.freeze();
    let tally = run.await.unwrap();
    assert!(tally.other.is_empty(), "{:?}", tally.other);
    eprintln!("slowest answer with Redis frozen: {:?}", tally.slowest);
    // quotas.timeout_ms is 100: a request waits for Redis at most that,
    // once; the rest is the node's own time on a loaded machine.
    assert!(
        tally.slowest < Duration::from_secs(1),
        "a request took {:?} while Redis was frozen",
        tally.slowest
    );
    for node in nodes.iter() {
        assert_eq!(
            readiness(node).await["quotas"]
                .as_str()
                .map(|q| q.starts_with("per-node share")),
            Some(true)
        );
        let m = metrics(node.admin.as_deref().unwrap()).await;
        assert!(
            sum(
                &m,
                "weir_quota_redis_calls_total",
                &[("outcome", "timeout")]
            ) > 0.0
        );
    }
    redis.thaw();
    for node in nodes.iter() {
        eventually(
            Duration::from_secs(5),
            "region-wide after the thaw",
            || async { synced(node).await == 1.0 },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_on_every_node_changes_the_region_wide_rate() {
    let category = category("quota", 1).await;
    let redis = Redis::start();
    let nodes = region(
        3,
        "requests_per_second = 20\nrequests_burst = 20",
        Some(&redis),
    );
    all_counted(&nodes).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let seconds = 3.0;
    let slow = hammer(
        &all,
        2,
        body(&category, 1),
        Duration::from_secs_f64(seconds),
    )
    .await;
    assert!(slow.other.is_empty(), "{:?}", slow.other);
    assert!(
        within(slow.ok as f64, 20.0 + 20.0 * seconds, 0.15),
        "{slow:?}"
    );
    for node in &nodes {
        let config = std::fs::read_to_string(&node.config_path).unwrap();
        std::fs::write(
            &node.config_path,
            config.replace("requests_per_second = 20", "requests_per_second = 100"),
        )
        .unwrap();
        let request = http::Request::post("/admin/reload")
            .header("host", "localhost")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let answer = send(&Transport::Http, node.admin.as_deref().unwrap(), request)
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    let fast = hammer(
        &all,
        2,
        body(&category, 1),
        Duration::from_secs_f64(seconds),
    )
    .await;
    assert!(fast.other.is_empty(), "{:?}", fast.other);
    eprintln!(
        "admitted at 20/s: {}; after the reload to 100/s: {}",
        slow.ok, fast.ok
    );
    // 100/s from an empty bucket (up to a burst of 20 refilled meanwhile).
    assert!(
        within(fast.ok as f64, 100.0 * seconds, 0.15),
        "after the reload: {fast:?}; before: {slow:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_cluster_holds_the_quota_too() {
    let category = category("quota", 1).await;
    // Three masters, the slots split between them, as an operator makes one.
    let dir = tempfile::tempdir().unwrap();
    let servers: Vec<Redis> = (0..3)
        .map(|_| {
            let port = weir_e2e::free_port();
            let conf = dir.path().join(format!("nodes-{port}.conf"));
            Redis::start_with(
                port,
                &[
                    "--port",
                    &port.to_string(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                ],
            )
        })
        .collect();
    let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
    create.extend(servers.iter().map(|r| format!("127.0.0.1:{}", r.port)));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
    servers[0].cli(&create.iter().map(String::as_str).collect::<Vec<_>>());
    eventually(Duration::from_secs(20), "the cluster up", || async {
        servers
            .iter()
            .all(|r| r.cli(&["cluster", "info"]).contains("cluster_state:ok"))
    })
    .await;
    let quotas = format!("redis_url = \"{}\"\ncluster = true", servers[1].url);
    let nodes: Vec<Node> = (0..2)
        .map(|_| {
            start_node(
                "requests_per_second = 50\nrequests_burst = 50",
                Some(&quotas),
            )
        })
        .collect();
    all_counted(&nodes).await;
    let seconds = 3.0;
    let tally = hammer(
        &nodes.iter().collect::<Vec<_>>(),
        3,
        body(&category, 1),
        Duration::from_secs_f64(seconds),
    )
    .await;
    assert!(tally.other.is_empty(), "{:?}", tally.other);
    let expected = 50.0 + 50.0 * seconds;
    eprintln!(
        "two nodes on a three-master cluster admitted {} (quota {expected})",
        tally.ok
    );
    assert!(within(tally.ok as f64, expected, 0.10), "{tally:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_a_password_is_reached_and_the_password_is_never_shown() {
    let certs = weir_e2e::TestCerts::new().unwrap();
    let port = weir_e2e::free_port();
    let (port_text, cert, key, ca) = (
        port.to_string(),
        certs.cert_path.to_str().unwrap(),
        certs.key_path.to_str().unwrap(),
        certs.ca_path.to_str().unwrap(),
    );
    let _redis = Redis::start_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port_text,
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-ca-cert-file",
            ca,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret",
        ],
    );
    let node_with = |password: &str| {
        start_node(
            "",
            Some(&format!(
                "redis_url = \"rediss://default:{password}@localhost:{port}\"\nca_path = \"{ca}\""
            )),
        )
    };
    let node = node_with("s3cret");
    let quotas = readiness(&node).await["quotas"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        quotas,
        format!("region-wide: 1 node(s) share rediss://default:***@localhost:{port}")
    );
    // A wrong password: on the node's share, saying why, password unshown.
    let wrong = node_with("wrong-pass");
    let quotas = readiness(&wrong).await["quotas"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        quotas.starts_with("per-node share (1/1 of each limit): "),
        "{quotas}"
    );
    assert!(
        quotas.contains("rediss://default:***@localhost"),
        "{quotas}"
    );
    for text in [quotas, node.log_text(), wrong.log_text()] {
        assert!(
            !text.contains("s3cret") && !text.contains("wrong-pass"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_say_the_region_and_node_they_entered_at() {
    let category = category("quota", 1).await;
    let node = start_node("", None);
    let id = unique("where");
    let answer = weir_e2e::post(
        &node,
        KEY,
        json!({"meta": {"category": category}, "data": [{"id": id}]}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let records = weir_e2e::consume(kafka(), &format!("events.{category}"), 1).unwrap();
    let headers = &records[0].headers;
    assert_eq!(headers["weir-region"], "test-eu");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(headers["weir-node"], host.trim());
}
