//! Tenants at the edge, against real `weir` processes: quotas, fair shedding,
//! an unauthenticated flood, slowloris, oversized headers, a certificate
//! swapped on disk, SIGTERM under load, and config reloads.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use serde_json::json;
use tokio::sync::Mutex;
use weir_e2e::scrape::sum;
use weir_e2e::{
    batch_request, category, consume, consume_all, contract, eventually, get, ids, kafka, metrics,
    post, send, tenant, unique, Connection, Node, TestCerts, Transport,
};

const KEY: &str = "edge-key";

fn batch(category: &str, ids: impl IntoIterator<Item = String>) -> String {
    let data: Vec<_> = ids.into_iter().map(|id| json!({"id": id})).collect();
    json!({"meta": {"category": category}, "data": data}).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_rate_allows_the_burst_and_retry_after_is_honest() {
    let category = category("edge", 1).await;
    let node = Node::start(
        // A token every 4 s: the burst's posts are well within it.
        &tenant(
            "acme",
            KEY,
            "requests_per_second = 0.25\nrequests_burst = 3",
        ),
        &[("WEIR_KAFKA_BROKERS", kafka())],
    )
    .unwrap();
    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..5 {
        let answer = post(&node, KEY, batch(&category, [format!("r{i}")]))
            .await
            .unwrap();
        statuses.push(answer.status);
        last = Some(answer);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let limited = last.unwrap();
    let json = limited.json();
    contract::check_answer("post", "/v1/batch", 429, &json);
    assert_eq!(json["error"], "rate_limited");
    assert_eq!(json["limit"], "requests");
    assert_eq!(json["parts"], json!([]));
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=4).contains(&retry_after), "{retry_after}");
    assert!(json["retry_after_ms"].as_u64().unwrap() <= retry_after * 1000);
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"requests\";q=0.25;w=1")
    );
    assert_eq!(
        limited.header("ratelimit"),
        Some(format!("\"requests\";r=0;t={retry_after}").as_str())
    );

    // Retrying after Retry-After succeeds.
    // (Not synchronisation: the client honours Retry-After, as the test says.)
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        post(&node, KEY, batch(&category, ["later".to_string()]))
            .await
            .unwrap()
            .status,
        200
    );
    let records = consume(kafka(), &format!("events.{category}"), 4).unwrap();
    assert_eq!(
        ids(&records),
        BTreeSet::from(["r0", "r1", "r2", "later"].map(String::from))
    );
}

/// Body bytes (after decompression) are charged before decoding; a tenant
/// with none left is refused before its body is read.
#[tokio::test(flavor = "multi_thread")]
async fn the_byte_rate_is_charged_before_decoding_and_checked_before_reading() {
    let category = category("edge", 1).await;
    let node = Node::start(
        // A byte every 100 s: nothing refills while the test runs.
        &tenant(
            "acme",
            KEY,
            "bytes_per_second = 0.01\nbytes_burst = 5000\nmax_body_bytes = 4096\nmax_decompressed_bytes = 4096",
        ),
        &[("WEIR_KAFKA_BROKERS", kafka())],
    )
    .unwrap();
    // A body of exactly `n` bytes.
    let body = |id: &str, n: usize| {
        let head = batch(&category, [id.to_owned()]);
        let pad = n - head.len() - r#","pad":"""#.len();
        let padded = head.replacen(
            "\"meta\":{",
            &format!("\"meta\":{{\"pad\":\"{}\",", "x".repeat(pad)),
            1,
        );
        assert_eq!(padded.len(), n);
        padded
    };
    let answer = post(&node, KEY, body("b1", 4000)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    // Each request also takes a byte before its body is read: 998 bytes
    // are left now, 1500 do not fit, and are not taken.
    let answer = post(&node, KEY, body("b2", 1500)).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 429, "{json}");
    contract::check_answer("post", "/v1/batch", 429, &json);
    assert_eq!(json["error"], "rate_limited");
    assert_eq!(json["limit"], "bytes");
    assert!(answer.header("retry-after").is_some());
    // 997 do (the last byte goes before the body is read).
    let answer = post(&node, KEY, body("b3", 997)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    // Nothing left: refused on its headers, before any body is sent (a node
    // waiting for the body would answer 408 after the body timeout).
    let mut stream = tokio::net::TcpStream::connect(&node.http).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!(
                "POST /v1/batch HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = vec![0; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 429");
    let stored = ids(&consume_all(
        kafka(),
        &format!("events.{category}"),
        Duration::from_secs(2),
    )
    .unwrap());
    assert_eq!(stored, BTreeSet::from(["b1", "b3"].map(String::from)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_rate_takes_or_refuses_a_batch_whole() {
    let category = category("edge", 1).await;
    let node = Node::start(
        &tenant("acme", KEY, "events_per_second = 0.1\nevents_burst = 10"),
        &[("WEIR_KAFKA_BROKERS", kafka())],
    )
    .unwrap();
    let first = post(
        &node,
        KEY,
        batch(&category, (0..8).map(|i| format!("a{i}"))),
    )
    .await
    .unwrap();
    assert_eq!(first.status, 200);

    // 5 more do not fit in the 2 left: all refused, none written.
    let body = json!({"meta": {"category": category}, "data": [
        {"id": "b0"}, {"id": "b1"}, {"no": "id"}, {"id": "b2"}, {"id": "b3"}, {"id": "b4"}]});
    let answer = post(&node, KEY, body.to_string()).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 429, "{json}");
    contract::check_answer("post", "/v1/batch", 429, &json);
    assert_eq!(
        (json["error"].as_str(), json["limit"].as_str()),
        (Some("rate_limited"), Some("events"))
    );
    assert!(answer.header("retry-after").is_some());
    let codes: Vec<&str> = json["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "rate_limited",
            "rate_limited",
            "invalid",
            "rate_limited",
            "rate_limited",
            "rate_limited"
        ]
    );
    assert_eq!(json["parts"][0]["retryable"], true);

    // More than the burst can never fit: 413, not a retry loop.
    let answer = post(
        &node,
        KEY,
        batch(&category, (0..11).map(|i| format!("c{i}"))),
    )
    .await
    .unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 413, "{json}");
    assert_eq!(json["error"], "batch_over_burst");

    // The 2 left are still there.
    assert_eq!(
        post(&node, KEY, batch(&category, ["d0".into(), "d1".into()]))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        consume(kafka(), &format!("events.{category}"), 10)
            .unwrap()
            .len(),
        10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_flood_is_refused_per_address() {
    let config = format!(
        "[server]\nunauthenticated_per_second = 0.2\nunauthenticated_burst = 3\n{}",
        tenant("acme", KEY, "")
    );
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let answer = post(&node, "wrong-key", "{}").await.unwrap();
        statuses.push(answer.status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // The right key from the same address is not affected.
    assert_eq!(post(&node, KEY, "{}").await.unwrap().status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_tenant_keeps_its_answers_while_another_floods() {
    // Slow acknowledgements (injected on the mock cluster) keep requests in
    // flight, so the flood saturates a node that admits 8 at once.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events.fair", 1, 1).unwrap();
    cluster
        .broker_round_trip_time(1, Duration::from_millis(200))
        .unwrap();
    let config = format!(
        "[server]\nmax_inflight = 8\n{}{}",
        tenant("noisy", "noisy-key", "categories = [\"fair\"]"),
        tenant("quiet", "quiet-key", "categories = [\"fair\"]")
    );
    let node = Arc::new(
        Node::start(
            &config,
            &[("WEIR_KAFKA_BROKERS", &cluster.bootstrap_servers())],
        )
        .unwrap(),
    );
    let body = |id: String| batch("fair", [id]);

    async fn quiet_run(node: &Node, body: impl Fn(String) -> String, n: usize, tag: &str) -> usize {
        let mut ok = 0;
        for i in 0..n {
            let answer = post(node, "quiet-key", body(format!("{tag}{i}")))
                .await
                .unwrap();
            if answer.status != 200 {
                eprintln!("quiet {tag}{i}: {} {}", answer.status, answer.json());
            }
            ok += usize::from(answer.status == 200);
        }
        ok
    }

    let baseline_ok = quiet_run(&node, body, 8, "base").await;
    assert_eq!(baseline_ok, 8);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shed = Arc::new(Mutex::new((0usize, 0usize)));
    let mut flood = Vec::new();
    for w in 0..24 {
        let (node, stop, shed) = (node.clone(), stop.clone(), shed.clone());
        flood.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let answer = post(&node, "noisy-key", batch("fair", [format!("n{w}-{i}")]))
                    .await
                    .unwrap();
                let mut shed = shed.lock().await;
                shed.0 += 1;
                if answer.status == 503 {
                    assert_eq!(answer.json()["error"], "overloaded");
                    shed.1 += 1;
                }
            }
        }));
    }
    // The quiet tenant posts once the node is saturated: the flood is
    // being shed.
    eventually(Duration::from_secs(30), "the flood to be shed", || async {
        shed.lock().await.1 > 0
    })
    .await;
    let flood_ok = quiet_run(&node, body, 12, "flood").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    let (noisy_total, noisy_shed) = *shed.lock().await;
    assert!(
        noisy_shed > 0,
        "the flood was never shed ({noisy_total} requests)"
    );
    assert_eq!(
        flood_ok, 12,
        "the quiet tenant lost answers during the flood"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_is_cut_off_and_others_are_served() {
    let category = category("edge", 1).await;
    let config = format!(
        "[server]\nheader_timeout_ms = 1000\n{}",
        tenant("acme", KEY, "")
    );
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    // The slow and silent clients are connected (here, before the threads
    // that keep them start) when the other client posts.
    let mut stream = std::net::TcpStream::connect(&node.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        let request =
            b"POST /v1/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n";
        for byte in request {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            // Not synchronisation: the slowloris client's pace, a byte every 200 ms.
            std::thread::sleep(Duration::from_millis(200));
            if started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        started.elapsed()
    });
    // Clients that connect and then say nothing, or only part of the
    // HTTP/2 preface (before hyper's own header timeout starts).
    let silent = [b"".as_slice(), b"PRI * HTTP/2.0"].map(|said| {
        let (stream, started) = say(&node.http, said);
        std::thread::spawn(move || wait_for_close(stream, started).1)
    });
    assert_eq!(
        post(&node, KEY, batch(&category, ["meanwhile".into()]))
            .await
            .unwrap()
            .status,
        200
    );
    let cut_after = tokio::task::spawn_blocking(move || slow.join().unwrap())
        .await
        .unwrap();
    assert!(
        cut_after < Duration::from_secs(4),
        "the slow client held its connection for {cut_after:?}"
    );
    for client in silent {
        let cut_after = tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap();
        assert!(
            cut_after < Duration::from_secs(4),
            "a silent client held its connection for {cut_after:?}"
        );
    }
}

/// Connects and sends `said`: the connection, and when it started.
fn say(address: &str, said: &[u8]) -> (std::net::TcpStream, Instant) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(said).unwrap();
    (stream, started)
}

/// Reads until the node closes the connection (or 8 s pass): what it
/// answered, and how long the connection lasted.
fn wait_for_close(mut stream: std::net::TcpStream, started: Instant) -> (String, Duration) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// A keep-alive connection past its age is closed with the answer to its
/// next request (`Connection: close`), so that clients reconnect and spread
/// over nodes, and not while idle: a close then would race the client's
/// next request, which would be lost on the wire.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_past_its_age_closes_with_an_answer() {
    let config = format!(
        "[server]\nmax_connection_age_ms = 500\n{}",
        tenant("acme", KEY, "")
    );
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let address = node.http.clone();
    let (answers, rest, elapsed) = tokio::task::spawn_blocking(move || {
        let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let (mut stream, started) = say(&address, request);
        let first = read_answer(&mut stream).unwrap();
        // Idle past the age (500 ms + 10% at most): the client's think time,
        // which is what the node must not close the connection in. Watched
        // all along: a peek waits up to 50 ms for bytes, and finds the
        // connection open with nothing to read.
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        while started.elapsed() < Duration::from_millis(1000) {
            match stream.peek(&mut [0u8; 1]) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                other => panic!("the idle connection was closed or spoke: {other:?}"),
            }
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        stream.write_all(request).unwrap();
        let second = read_answer(&mut stream).unwrap();
        let (rest, elapsed) = wait_for_close(stream, started);
        ([first, second], rest, elapsed)
    })
    .await
    .unwrap();
    let [first, second] = answers;
    assert_eq!((first.status, first.close), (200, false), "{}", first.head);
    assert_eq!(
        (second.status, second.close),
        (200, true),
        "{}",
        second.head
    );
    assert_eq!(rest, "", "nothing after the closing answer");
    assert!(
        elapsed < Duration::from_secs(5),
        "the connection stayed open {elapsed:?} (the keep-alive timeout is 10 s)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_get_431() {
    let node = Node::start(&tenant("acme", KEY, ""), &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let big = "x".repeat(20 * 1024);
    let request = batch_request(Some(KEY), "{}", &[("x-big", big.as_str())]);
    let answer = send(&Transport::Http, &node.http, request).await.unwrap();
    assert_eq!(answer.status, 431);
    let names: Vec<String> = (0..100).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let answer = send(
        &Transport::Http,
        &node.http,
        batch_request(Some(KEY), "{}", &many),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 431);
    assert_eq!(get(&node.http, "/healthz").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_swapped_on_disk_is_served_without_a_restart() {
    let category = category("edge", 1).await;
    let first = TestCerts::new().unwrap();
    let config = format!(
        "[tls]\nreload_interval_ms = 100\n{}",
        tenant("acme", KEY, "")
    );
    let node = Node::start(
        &config,
        &[
            ("WEIR_KAFKA_BROKERS", kafka()),
            ("WEIR_TLS_CERT", first.cert_path.to_str().unwrap()),
            ("WEIR_TLS_KEY", first.key_path.to_str().unwrap()),
        ],
    )
    .unwrap();
    let https = node.https.clone().unwrap();
    let old_ca = Transport::Https {
        ca_pem: first.ca_pem.clone(),
        h2: false,
    };
    let mut kept = Connection::open(&old_ca, &https).await.unwrap();
    assert_eq!(
        kept.send(batch_request(
            Some(KEY),
            batch(&category, ["one".into()]),
            &[]
        ))
        .await
        .unwrap()
        .status,
        200
    );

    // A renewal from another CA lands on disk (key first, then certificate).
    let second = TestCerts::new().unwrap();
    std::fs::copy(&second.key_path, &first.key_path).unwrap();
    std::fs::copy(&second.cert_path, &first.cert_path).unwrap();
    let new_ca = Transport::Https {
        ca_pem: second.ca_pem.clone(),
        h2: true,
    };
    let answer = eventually(
        Duration::from_secs(10),
        "the new certificate to be served",
        || {
            send(
                &new_ca,
                &https,
                batch_request(Some(KEY), batch(&category, ["two".into()]), &[]),
            )
        },
    )
    .await;
    assert_eq!(answer.status, 200);
    // New handshakes no longer get the old certificate; the open connection keeps working.
    assert!(send(&old_ca, &https, batch_request(Some(KEY), "{}", &[]))
        .await
        .is_err());
    assert_eq!(
        kept.send(batch_request(
            Some(KEY),
            batch(&category, ["three".into()]),
            &[]
        ))
        .await
        .unwrap()
        .status,
        200
    );
    assert_eq!(
        consume(kafka(), &format!("events.{category}"), 3)
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let category = category("edge", 1).await;
    let mut node =
        Node::start(&tenant("acme", KEY, ""), &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let address = node.http.clone();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (address, acknowledged, category) =
            (address.clone(), acknowledged.clone(), category.clone());
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let ids: Vec<String> = (0..10).map(|e| format!("w{w}-{i}-{e}")).collect();
                let request = batch_request(Some(KEY), batch(&category, ids.clone()), &[]);
                match send(&Transport::Http, &address, request).await {
                    Ok(answer) if answer.status == 200 => acknowledged.lock().await.extend(ids),
                    Ok(_) => {}
                    Err(_) => break, // the node stopped accepting
                }
            }
        }));
    }
    // SIGTERM lands under load: once the load is flowing (the same count as
    // checked below).
    eventually(
        Duration::from_secs(30),
        "more than 100 events acknowledged",
        || async { acknowledged.lock().await.len() > 100 },
    )
    .await;
    let status = tokio::task::block_in_place(|| node.terminate()).unwrap();
    for w in workers {
        w.await.unwrap();
    }
    assert!(status.success(), "{status}");
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() > 100,
        "only {} events acknowledged",
        acknowledged.len()
    );
    let stored = ids(&consume_all(
        kafka(),
        &format!("events.{category}"),
        Duration::from_secs(2),
    )
    .unwrap());
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are not in Kafka, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_the_requests_in_flight_and_flushes_their_records() {
    // Slow acknowledgements (injected on the mock cluster) keep every request
    // waiting for Kafka when SIGTERM arrives: each must still be answered
    // `ok`, with its records in Kafka, before the node exits.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events.drain", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut node = Node::start(
        &tenant("acme", KEY, "categories = [\"drain\"]"),
        &[("WEIR_KAFKA_BROKERS", &brokers)],
    )
    .unwrap();
    // The topic's listing and the broker connection first, at full speed:
    // under a loaded suite, a first metadata lookup at 1.5 s a round trip
    // could outlast its 5 s timeout (seen once), which is not what this
    // test is about.
    let warm = post(&node, KEY, batch("drain", ["drain-warm".to_owned()]))
        .await
        .unwrap();
    assert_eq!(warm.status, 200, "{}", warm.json());
    cluster
        .broker_round_trip_time(1, Duration::from_millis(1500))
        .unwrap();
    let in_flight = 8;
    let requests: Vec<_> = (0..in_flight)
        .map(|r| {
            let address = node.http.clone();
            let ids = [format!("drain-{r}-a"), format!("drain-{r}-b")];
            tokio::spawn(async move {
                let request = batch_request(Some(KEY), batch("drain", ids), &[]);
                send(&Transport::Http, &address, request).await
            })
        })
        .collect();
    // Every request is inside the node (admitted, waiting for Kafka).
    let admin = node.admin.clone().unwrap();
    eventually(
        Duration::from_secs(20),
        "every request in flight",
        || async {
            let inside = sum(&metrics(&admin).await, "weir_inflight_requests", &[]);
            if inside >= in_flight as f64 {
                Ok(())
            } else {
                Err(format!("{inside} requests in flight"))
            }
        },
    )
    .await;
    let status = tokio::task::block_in_place(|| node.terminate()).unwrap();
    assert!(status.success(), "{status}: {}", node.log_text());
    let mut answered = BTreeSet::new();
    for request in requests {
        let answer = request.await.unwrap().expect("answered, not cut off");
        let json = answer.json();
        assert_eq!(answer.status, 200, "{json}");
        // The node closes the connection after it: the answer says so.
        assert_eq!(answer.header("connection"), Some("close"), "{json}");
        let parts = json["parts"].as_array().unwrap();
        assert_eq!(parts.len(), 2, "{json}");
        for part in parts {
            assert_eq!(part["code"], "ok", "{json}");
            answered.insert(part["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(answered.len(), 2 * in_flight);
    assert!(node.log_text().contains("producer flushed"));
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    answered.insert("drain-warm".to_owned());
    let stored = ids(&consume(&brokers, "events.drain", answered.len()).unwrap());
    assert_eq!(stored, answered);
}

/// A node (with `server` lines for its `[server]`) on a mock Kafka cluster
/// whose topic for `category` it has written to once, after which every
/// round trip to the broker takes `round_trip_ms`.
async fn slowed_kafka(
    category: &str,
    server: &str,
    round_trip_ms: u64,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Node,
) {
    let cluster = MockCluster::new(1).unwrap();
    cluster
        .create_topic(&format!("events.{category}"), 1, 1)
        .unwrap();
    let config = format!(
        "[server]\n{server}\n{}",
        tenant("acme", KEY, &format!("categories = [\"{category}\"]"))
    );
    let node = Node::start(
        &config,
        &[("WEIR_KAFKA_BROKERS", &cluster.bootstrap_servers())],
    )
    .unwrap();
    // The topic is known before Kafka slows down.
    let answer = post(&node, KEY, batch(category, ["first".to_owned()]))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    cluster
        .broker_round_trip_time(1, Duration::from_millis(round_trip_ms))
        .unwrap();
    (cluster, node)
}

/// Past the processing limit a request waits its turn (with its body read)
/// and is answered like any other; when what requests wait for is Kafka (a
/// slow one here) and not the node's CPU, the limit rises.
#[tokio::test(flavor = "multi_thread")]
async fn requests_past_the_processing_limit_wait_and_a_slow_kafka_raises_it() {
    let (_cluster, node) = slowed_kafka("turns", "processing_min = 2", 1000).await;
    let admin = node.admin.clone().unwrap();
    let node = Arc::new(node);
    let posts: Vec<_> = (0..40)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move { post(&node, KEY, batch("turns", [format!("e{i}")])).await })
        })
        .collect();
    // All 40 admitted, as many processed as the limit (2, or a few more
    // after the quick first request), the others waiting their turn (the
    // first answers are a second away).
    eventually(Duration::from_secs(5), "40 requests in flight", || async {
        sum(&metrics(&admin).await, "weir_inflight_requests", &[]) >= 40.0
    })
    .await;
    let samples = metrics(&admin).await;
    let limit = sum(&samples, "weir_processing_limit", &[]);
    assert!((2.0..40.0).contains(&limit), "{limit}");
    assert_eq!(sum(&samples, "weir_processing_requests", &[]), limit);
    for answer in futures::future::join_all(posts).await {
        let answer = answer.unwrap().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.json());
    }
    let samples = metrics(&admin).await;
    assert!(
        sum(&samples, "weir_processing_limit", &[]) > limit,
        "the waits were Kafka's, not a queue: the limit rose"
    );
    assert_eq!(sum(&samples, "weir_processing_requests", &[]), 0.0);
}

/// A client that gives up while its records wait for Kafka does not free
/// its in-flight place: the records count until they are answered, so
/// retries cannot pile more copies into the producer's queue than
/// max_inflight allows. They are still written (at least once).
#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_client_left_keeps_its_place_until_kafka_answers() {
    let (cluster, node) = slowed_kafka("gone", "", 3000).await;
    let brokers = cluster.bootstrap_servers();
    let admin = node.admin.clone().unwrap();
    let in_flight = || async { sum(&metrics(&admin).await, "weir_inflight_requests", &[]) };
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        post(&node, KEY, batch("gone", ["left".to_owned()])),
    )
    .await;
    assert!(gave_up.is_err(), "the client left before Kafka answered");
    // The node has seen the connection close; the request still counts.
    eventually(
        Duration::from_secs(10),
        "the node to see the client's connection close",
        || async {
            let samples = metrics(&admin).await;
            sum(&samples, "weir_open_connections", &[("listener", "ingest")]) == 0.0
        },
    )
    .await;
    assert_eq!(in_flight().await, 1.0);
    // Until Kafka answers its record, which is written.
    eventually(
        Duration::from_secs(30),
        "the request to leave the in-flight count",
        || async { in_flight().await <= 0.0 },
    )
    .await;
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let stored = ids(&consume(&brokers, "events.gone", 2).unwrap());
    assert_eq!(stored, BTreeSet::from(["first", "left"].map(String::from)));
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// An h2 connection with prior knowledge, over plain TCP: its sender, and
/// the task driving it, which ends when the connection closes.
async fn h2(address: &str) -> (H2Sender, tokio::task::JoinHandle<hyper::Result<()>>) {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(connection))
}

/// `GET /healthz` for an h2 sender.
fn health() -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::get("http://localhost/healthz")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap()
}

/// An h2 client answering the node's pings could hold a connection (a
/// slot of the listener's cap) without ever sending a request: an idle h2
/// connection is closed after the header timeout, as HTTP/1.1's is, but
/// not while a request on it waits for Kafka.
#[tokio::test(flavor = "multi_thread")]
async fn an_h2_connection_is_closed_when_idle_not_while_a_request_waits() {
    let (_cluster, node) = slowed_kafka("idle", "header_timeout_ms = 1000", 2500).await;
    let (mut sender, connection) = h2(&node.http).await;
    let request = batch_request(Some(KEY), batch("idle", ["slow".to_owned()]), &[]);
    let answer = sender.send_request(request).await.unwrap();
    assert_eq!(answer.status(), 200, "answered after 2.5 s in flight");
    // The connection was not idle while the request waited: it still takes
    // requests (a closing one would refuse new streams).
    assert_eq!(sender.send_request(health()).await.unwrap().status(), 200);
    // Nothing more is sent: the node closes the connection.
    tokio::time::timeout(Duration::from_secs(30), connection)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .unwrap();
}

/// An HTTP/2 connection past its age is closed by GOAWAY (which names the
/// last stream taken, so no request races it), long before the idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn an_h2_connection_past_its_age_gets_goaway() {
    let config = format!(
        "[server]\nmax_connection_age_ms = 500\n{}",
        tenant("acme", KEY, "")
    );
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let started = std::time::Instant::now();
    let (mut sender, connection) = h2(&node.http).await;
    assert_eq!(sender.send_request(health()).await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("closed at its age, not after the 10 s idle timeout")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}

/// One address holds at most `max_connections_per_address` of a
/// listener's connections; a connection over it is closed at once, and
/// one that ends gives its place back.
#[tokio::test(flavor = "multi_thread")]
async fn one_address_holds_at_most_its_share_of_connections() {
    let node = Node::start(
        &("[server]\nmax_connections_per_address = 2\n".to_owned() + &tenant("acme", KEY, "")),
        &[("WEIR_KAFKA_BROKERS", kafka())],
    )
    .unwrap();
    let health = || {
        http::Request::get("/healthz")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let mut first = Connection::open(&Transport::Http, &node.http)
        .await
        .unwrap();
    let mut second = Connection::open(&Transport::Http, &node.http)
        .await
        .unwrap();
    assert_eq!(first.send(health()).await.unwrap().status, 200);
    assert_eq!(second.send(health()).await.unwrap().status, 200);
    let mut third = Connection::open(&Transport::Http, &node.http)
        .await
        .unwrap();
    assert!(
        third.send(health()).await.is_err(),
        "a third connection is closed"
    );
    // The second keeps being served; once the first is closed, a new one is.
    assert_eq!(second.send(health()).await.unwrap().status, 200);
    drop(first);
    let answer = eventually(
        Duration::from_secs(10),
        "a new connection to be served again",
        || async {
            let mut again = Connection::open(&Transport::Http, &node.http)
                .await
                .unwrap();
            again.send(health()).await
        },
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_reload_applies_a_good_file_and_refuses_a_bad_one() {
    let category = category("edge", 1).await;
    let node = Node::start(&tenant("acme", KEY, ""), &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let admin = node.admin.clone().unwrap();
    let reload = || async {
        let request = http::Request::post("/admin/reload")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        send(&Transport::Http, &admin, request).await.unwrap()
    };
    let body = || batch(&category, [unique("id")]);
    assert_eq!(post(&node, "beta-key", body()).await.unwrap().status, 401);

    // A new tenant by POST /admin/reload.
    std::fs::write(
        &node.config_path,
        tenant("acme", KEY, "") + &tenant("beta", "beta-key", ""),
    )
    .unwrap();
    let answer = reload().await;
    assert_eq!(answer.status, 200);
    contract::check_answer("post", "/admin/reload", 200, &answer.json());
    assert_eq!(answer.json()["tenants"], 2);
    assert_eq!(answer.json()["restart_needed"], json!([]));
    assert_eq!(post(&node, "beta-key", body()).await.unwrap().status, 200);

    // A section read only at start is reported, not applied.
    std::fs::write(
        &node.config_path,
        "[server]\nmax_inflight = 7\n".to_owned()
            + &tenant("acme", KEY, "")
            + &tenant("beta", "beta-key", ""),
    )
    .unwrap();
    let answer = reload().await;
    assert_eq!(answer.status, 200);
    contract::check_answer("post", "/admin/reload", 200, &answer.json());
    assert_eq!(answer.json()["restart_needed"], json!(["server"]));
    assert!(node
        .log_text()
        .contains("apply only at start: restart the node"));
    assert_eq!(
        sum(&metrics(&admin).await, "weir_inflight_requests_max", &[]),
        1024.0,
        "the running cap is the one the node started with"
    );

    // A bad file is refused with its reason; the running tenants stay.
    std::fs::write(
        &node.config_path,
        "[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"nothex\"]\n",
    )
    .unwrap();
    let answer = reload().await;
    let json = answer.json();
    assert_eq!(answer.status, 400);
    contract::check_answer("post", "/admin/reload", 400, &json);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("tenants[0].keys_sha256[0]: must be 64 hex digits"),
        "{json}"
    );
    assert_eq!(post(&node, "beta-key", body()).await.unwrap().status, 200);
    assert!(node.log_text().contains("configuration reload refused"));

    // SIGHUP does the same: beta is removed.
    std::fs::write(&node.config_path, tenant("acme", KEY, "")).unwrap();
    node.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "SIGHUP to reload (beta-key refused)",
        || async { post(&node, "beta-key", body()).await.unwrap().status == 401 },
    )
    .await;
    assert_eq!(post(&node, KEY, body()).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_with_client_certificates_requires_one_of_them() {
    let category = category("edge", 1).await;
    let certs = TestCerts::new().unwrap();
    let own = certs.client("acme-device").unwrap();
    let stranger = certs.client("someone-else").unwrap();
    let config = tenant(
        "acme",
        KEY,
        &format!("client_cert_sha256 = [\"{}\"]", own.sha256),
    ) + &tenant("open", "open-key", "");
    let node = Node::start(
        &config,
        &[
            ("WEIR_KAFKA_BROKERS", kafka()),
            ("WEIR_TLS_CERT", certs.cert_path.to_str().unwrap()),
            ("WEIR_TLS_KEY", certs.key_path.to_str().unwrap()),
            ("WEIR_TLS_CLIENT_CA", certs.ca_path.to_str().unwrap()),
        ],
    )
    .unwrap();
    let https = node.https.clone().unwrap();
    let body = || batch(&category, [unique("m")]);
    let with = |client: &weir_e2e::ClientCert| Transport::Mtls {
        ca_pem: certs.ca_pem.clone(),
        client: client.clone(),
    };
    let without = Transport::Https {
        ca_pem: certs.ca_pem.clone(),
        h2: false,
    };

    let ok = send(&with(&own), &https, batch_request(Some(KEY), body(), &[]))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.json());
    for (transport, address, expected) in [
        (
            &without,
            &https,
            "tenant 'acme' requires a client certificate (HTTPS with mTLS)",
        ),
        (
            &with(&stranger),
            &https,
            "the client certificate is not one of tenant 'acme'",
        ),
        (
            &Transport::Http,
            &node.http,
            "tenant 'acme' requires a client certificate (HTTPS with mTLS)",
        ),
    ] {
        let answer = send(transport, address, batch_request(Some(KEY), body(), &[]))
            .await
            .unwrap();
        let json = answer.json();
        assert_eq!(answer.status, 403, "{json}");
        assert_eq!(json["error"], "client_certificate_required");
        assert_eq!(json["message"], expected);
    }
    // A tenant without client certificates is not affected, with or without one.
    assert_eq!(
        send(
            &without,
            &https,
            batch_request(Some("open-key"), body(), &[])
        )
        .await
        .unwrap()
        .status,
        200
    );
    assert_eq!(
        send(
            &with(&stranger),
            &https,
            batch_request(Some("open-key"), body(), &[])
        )
        .await
        .unwrap()
        .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stalls_gets_408() {
    let config = format!(
        "[server]\nbody_timeout_ms = 500\n{}",
        tenant("acme", KEY, "")
    );
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let mut stream = std::net::TcpStream::connect(&node.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"meta\":"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"body_timeout\""), "{answer}");
    // The node closes the connection after it: the answer says so.
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
}

/// How a raw request's body goes out after its head.
enum Sent {
    /// In the same write as the head.
    WithHead(Vec<u8>),
    /// In a write of its own, a moment after the head (as a client's body
    /// may reach the node after the node has read the head, and decided).
    Later(Vec<u8>),
    /// By a thread of its own while the answer is read: a body too large
    /// to go out before the node answers, which it may never read.
    Alongside(Vec<u8>),
    /// Not at all (the client waits for `100 Continue`).
    Not,
}

/// An HTTP/1.1 answer read off a raw connection.
struct RawAnswer {
    status: u16,
    /// Whether it said `Connection: close`.
    close: bool,
    head: String,
}

/// Reads one answer: its head to the blank line, then `Content-Length`
/// bytes of body.
fn read_answer(stream: &mut std::net::TcpStream) -> std::io::Result<RawAnswer> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the node closed the connection without an answer (after {:?})",
                    String::from_utf8_lossy(&head)
                ),
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (mut length, mut close) = (0, false);
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        let (name, value) = (
            name.trim().to_ascii_lowercase(),
            value.trim().to_ascii_lowercase(),
        );
        match name.as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "connection" => close |= value.split(',').any(|v| v.trim() == "close"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok(RawAnswer {
        status,
        close,
        head,
    })
}

/// One HTTP/1.1 connection used as a client's pool uses it: kept for the
/// next request unless an answer said `Connection: close`, then a new one.
/// Checks that the node keeps to what it said: a connection whose answer
/// said close is closed by the node, and one whose answer did not answers
/// the next request (or that request fails here).
struct Pool {
    address: String,
    stream: Option<std::net::TcpStream>,
}

impl Pool {
    /// Sends `what`: its head and its body as `body` says; reads the answer.
    fn send(&mut self, what: &str, head: &str, body: Sent) -> RawAnswer {
        let reused = self.stream.is_some();
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                let stream = std::net::TcpStream::connect(&self.address).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                stream
            }
        };
        let failed = |e: std::io::Error| -> ! {
            match reused {
                true => panic!("{what}: failed on the connection the last answer kept: {e}"),
                false => panic!("{what}: failed on a new connection: {e}"),
            }
        };
        let mut alongside = None;
        match body {
            Sent::WithHead(body) => {
                let mut bytes = head.as_bytes().to_vec();
                bytes.extend_from_slice(&body);
                stream.write_all(&bytes).unwrap_or_else(|e| failed(e));
            }
            Sent::Later(body) => {
                // Head and body in writes (and, without Nagle, segments)
                // of their own: the node decides on the head alone, and the
                // test holds whether the body is there by then or not.
                stream.set_nodelay(true).unwrap_or_else(|e| failed(e));
                stream
                    .write_all(head.as_bytes())
                    .unwrap_or_else(|e| failed(e));
                // The node may have answered (and closed) without it: the
                // answer tells.
                let _ = stream.write_all(&body);
            }
            Sent::Alongside(body) => {
                stream
                    .write_all(head.as_bytes())
                    .unwrap_or_else(|e| failed(e));
                let mut writer = stream.try_clone().unwrap();
                // Fails once the node closes the connection: it need not read it.
                alongside = Some(std::thread::spawn(move || {
                    let _ = writer.write_all(&body);
                }));
            }
            Sent::Not => stream
                .write_all(head.as_bytes())
                .unwrap_or_else(|e| failed(e)),
        }
        let answer = read_answer(&mut stream).unwrap_or_else(|e| failed(e));
        if answer.close {
            // The node closes it, now (not after its idle timeout).
            let mut rest = [0u8; 1];
            match stream.read(&mut rest) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!(
                    "{what}: the answer said close, yet the connection stayed open ({other:?}): {}",
                    answer.head
                ),
            }
        } else {
            self.stream = Some(stream);
        }
        if let Some(writer) = alongside {
            writer.join().unwrap();
        }
        answer
    }
}

/// The head of a `POST /v1/batch` with these header lines.
fn head_of(headers: &str, length: usize) -> String {
    format!(
        "POST /v1/batch HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {length}\r\n\r\n"
    )
}

/// A refused request whose body the node did not read (all of it) never
/// costs the next request on its keep-alive connection: the node reads and
/// discards a small body and keeps the connection, or its answer says
/// `Connection: close` and it closes it. Each refusal is followed by a
/// valid upload on the connection a pooling client would use.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_body_never_costs_the_next_request_on_its_connection() {
    let category = category("edge", 1).await;
    let node = Node::start(&tenant("acme", KEY, ""), &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let json = format!("Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n");
    let small = || format!("{{\"pad\":\"{}\"}}", "x".repeat(300)).into_bytes();
    let n = small().len();
    let big = vec![b' '; 2 << 20];
    let too_many_headers = (0..100)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect::<String>();
    // (what, head, body, status, whether the answer must say close: Some(false)
    // for a small body that came with its head (discarded, the connection
    // kept), None where either is right)
    let refusals = [
        (
            "401, small body with its head",
            head_of(
                "Authorization: Bearer nope\r\nContent-Type: application/json\r\n",
                n,
            ),
            Sent::WithHead(small()),
            401,
            Some(false),
        ),
        (
            "401, small body after its head",
            head_of("Content-Type: application/json\r\n", n),
            Sent::Later(small()),
            401,
            None,
        ),
        (
            "415, small body with its head",
            head_of(
                &format!("Authorization: Bearer {KEY}\r\nContent-Type: text/plain\r\n"),
                n,
            ),
            Sent::WithHead(small()),
            415,
            Some(false),
        ),
        (
            "413, 2 MiB body over the 1 MiB cap",
            head_of(&json, big.len()),
            Sent::Alongside(big),
            413,
            Some(true),
        ),
        (
            "401, body waiting for 100 Continue",
            head_of(
                "Expect: 100-continue\r\nContent-Type: application/json\r\n",
                n,
            ),
            Sent::Not,
            401,
            None,
        ),
        (
            "400, a chunked body that breaks off (a protocol error)",
            format!("POST /v1/batch HTTP/1.1\r\nHost: localhost\r\n{json}Transfer-Encoding: chunked\r\n\r\n"),
            Sent::WithHead(b"5\r\n{\"a\":\r\nnot a chunk size\r\n".to_vec()),
            400,
            Some(true),
        ),
        (
            "431, too many headers (a protocol error)",
            head_of(&format!("{json}{too_many_headers}"), 0),
            Sent::Not,
            431,
            Some(true),
        ),
    ];
    let address = node.http.clone();
    tokio::task::spawn_blocking(move || {
        let mut pool = Pool {
            address,
            stream: None,
        };
        for (i, (what, head, body, status, closes)) in refusals.into_iter().enumerate() {
            let answer = pool.send(what, &head, body);
            assert_eq!(answer.status, status, "{what}: {}", answer.head);
            if let Some(closes) = closes {
                assert_eq!(
                    answer.close, closes,
                    "{what}: whether it says close: {}",
                    answer.head
                );
            }
            let valid = batch(&category, [format!("after-{i}")]);
            let answer = pool.send(
                &format!("the upload after {what}"),
                &head_of(&json, valid.len()),
                Sent::WithHead(valid.into_bytes()),
            );
            assert_eq!(
                answer.status, 200,
                "the upload after {what}: {}",
                answer.head
            );
        }
    })
    .await
    .unwrap();
}
