//! Broker faults, injected with librdkafka's mock cluster (a real
//! Kafka-protocol server in this test process): a node whose broker goes
//! down answers `delivery_failed` (retryable, 503 + Retry-After), never `ok`
//! for an event Kafka did not take, and recovers when the broker returns.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;
use weir_e2e::{consume_all, contract, eventually, ids, post, tenant, Node};

const KEY: &str = "delivery-key";

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_is_retryable_and_the_node_recovers() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("events.orders", 2, 1).unwrap();
    let config = format!(
        "[kafka]\ndelivery_timeout_ms = 2000\n[kafka.producer]\n\"retry.backoff.max.ms\" = \"200\"\n\n{}",
        tenant("shop", KEY, "")
    );
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", &brokers)]).unwrap();
    let batch = |id: &str| {
        json!({"meta": {"category": "orders"}, "data": [{"id": format!("{id}-1")}, {"id": format!("{id}-2")}]}).to_string()
    };
    let acknowledged = RefCell::new(BTreeSet::new());
    let record_ok = |json: &serde_json::Value| {
        for p in json["parts"].as_array().unwrap() {
            if p["code"] == "ok" {
                acknowledged
                    .borrow_mut()
                    .insert(p["id"].as_str().unwrap().to_owned());
            }
        }
    };

    let answer = post(&node, KEY, batch("before")).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    record_ok(&answer.json());

    cluster.broker_down(1).unwrap();
    let answer = post(&node, KEY, batch("during")).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 503, "{json}");
    contract::check_answer("post", "/v1/batch", 503, &json);
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(json["code"], 2);
    assert_eq!(json["parts"].as_array().unwrap().len(), 2, "{json}");
    for p in json["parts"].as_array().unwrap() {
        assert_eq!(p["code"], "delivery_failed", "{json}");
        assert_eq!(p["retryable"], true);
        assert!(
            p["message"]
                .as_str()
                .unwrap()
                .starts_with("Kafka did not acknowledge the event"),
            "{p}"
        );
    }
    record_ok(&json);

    cluster.broker_up(1).unwrap();
    // The client retries (sooner than Retry-After says) until the node takes the batch.
    eventually(Duration::from_secs(60), "the node to recover", || async {
        let answer = post(&node, KEY, batch("after")).await.unwrap();
        let json = answer.json();
        record_ok(&json);
        match answer.status {
            200 => Ok(()),
            _ => Err(json),
        }
    })
    .await;
    let acknowledged = acknowledged.into_inner();
    assert!(acknowledged.contains("after-1") && acknowledged.contains("after-2"));

    // Every event answered ok is in Kafka. (A retried batch may add
    // duplicates: at-least-once. Events answered delivery_failed may or may
    // not have landed; the client sends them again.)
    let stored = ids(&consume_all(&brokers, "events.orders", Duration::from_secs(2)).unwrap());
    assert!(
        acknowledged.is_subset(&stored),
        "acknowledged {acknowledged:?}, stored {stored:?}"
    );
    drop(node);
}

/// Faults tansu cannot give, with a spool: a partition whose leader is gone,
/// then a broker slower than the wait. Each upload is answered within the
/// wait plus a little, `spooled` (202), never refused; once the fault is
/// gone every accepted event is in Kafka.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_spool_a_partition_without_its_leader_or_a_slow_broker_is_spooled() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("events.orders", 1, 1).unwrap();
    let spool = tempfile::tempdir().unwrap();
    let config = format!(
        "[kafka]\ndelivery_timeout_ms = 10000\n[spool]\npath = \"{}\"\nwait_ms = 1000\n\n{}",
        spool.path().display(),
        tenant("shop", KEY, "")
    );
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", &brokers)]).unwrap();
    let accepted = RefCell::new(BTreeSet::new());
    let upload = |name: &'static str| {
        let body = json!({"meta": {"category": "orders"}, "data": [{"id": format!("{name}-1")}, {"id": format!("{name}-2")}]});
        let (node, accepted) = (&node, &accepted);
        async move {
            let started = std::time::Instant::now();
            let answer = post(node, KEY, body.to_string()).await.unwrap();
            let took = started.elapsed();
            let json = answer.json();
            contract::check_answer("post", "/v1/batch", answer.status, &json);
            for p in json["parts"].as_array().unwrap() {
                if p["code"] == "ok" || p["code"] == "spooled" {
                    accepted
                        .borrow_mut()
                        .insert(p["id"].as_str().unwrap().to_owned());
                }
            }
            (answer.status, took, json)
        }
    };
    let all_in_kafka = || async {
        let stored = ids(&consume_all(&brokers, "events.orders", Duration::from_secs(1)).unwrap());
        let missing: Vec<String> = accepted.borrow().difference(&stored).cloned().collect();
        match missing.is_empty() {
            true => Ok(()),
            false => Err(format!("missing {missing:?}")),
        }
    };
    assert_eq!(upload("before").await.0, 200);

    // Every produce request answered "not the leader" (a partition whose
    // leader is gone; the mock cluster's own leader-less partition crashes
    // it when written to).
    let no_leader = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 200];
    cluster.request_errors(RDKafkaApiKey::Produce, &no_leader);
    let (status, took, json) = upload("leaderless").await;
    assert_eq!(status, 202, "{json}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        json["parts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["code"] == "spooled"),
        "{json}"
    );
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    eventually(
        Duration::from_secs(60),
        "every accepted event in Kafka",
        all_in_kafka,
    )
    .await;

    cluster
        .broker_round_trip_time(1, Duration::from_secs(4))
        .unwrap();
    let (status, took, json) = upload("slow").await;
    assert_eq!(status, 202, "{json}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    eventually(
        Duration::from_secs(60),
        "every accepted event in Kafka",
        all_in_kafka,
    )
    .await;
}
