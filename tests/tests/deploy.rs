//! `deploy/`: the container image, the compose stack and the Kubernetes
//! manifests, checked without a container engine. Each file parses, the
//! node configs they ship pass the real `weir check-config`, and the parts
//! agree with each other and with the node (ports, probe paths, service
//! names, mounts, drain time, user).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use weir_e2e::{root, weir_bin};

/// How long the node flushes queued records after the drain, at most
/// (`FLUSH_TIMEOUT` in gateway/src/node/mod.rs; the README says it too).
const FLUSH_S: i64 = 30;
fn deploy() -> PathBuf {
    root().join("deploy")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a multi-document YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            value
        })
        .collect()
}

/// `weir check-config` on a node config, as an operator would run it.
fn check_config(toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, toml).unwrap();
    let output = std::process::Command::new(weir_bin())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("WEIR_KAFKA_BROKERS", "kafka:9092")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "weir check-config refused:\n{toml}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The ports of a node config's listeners.
fn listener_ports(toml: &str) -> BTreeSet<u16> {
    let config: toml::Value = toml::from_str(toml).unwrap();
    ["listen", "tls_listen", "admin_listen"]
        .iter()
        .filter_map(|key| config["server"].get(*key)?.as_str())
        .filter_map(|address| address.rsplit(':').next()?.parse().ok())
        .collect()
}

fn host_of(url: &str) -> &str {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.split([':', '/']).next().unwrap()
}

#[test]
fn the_container_image_builds_the_node_and_runs_it_unprivileged() {
    let text = std::fs::read_to_string(deploy().join("Containerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a slim runtime stage");
    // The builder's Rust is at least the workspace's rust-version.
    let workspace: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let wanted = workspace["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    assert!(
        froms[0].starts_with(&format!("FROM rust:{wanted}")),
        "{}",
        froms[0]
    );
    // Every file copied from the repository exists.
    for line in lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                root().join(source).exists(),
                "{line}: {source} does not exist"
            );
        }
    }
    // Runs as the unprivileged user the Kubernetes manifests expect.
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER");
    assert_eq!(*user, "USER 10001");
    // Exposes exactly the listeners of the config it ships, a config the
    // node accepts and that names no tenant: an image run as it is accepts
    // no key, least of all the README's demo key.
    let exposed: BTreeSet<u16> = lines
        .iter()
        .filter(|l| l.starts_with("EXPOSE "))
        .flat_map(|l| l[7..].split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    let shipped = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("COPY ")?
                .strip_suffix(" /etc/weir/weir.toml")
        })
        .expect("the image ships /etc/weir/weir.toml");
    let config = std::fs::read_to_string(root().join(shipped)).unwrap();
    check_config(&config);
    assert_eq!(exposed, listener_ports(&config));
    assert!(
        toml::from_str::<toml::Value>(&config)
            .unwrap()
            .get("tenants")
            .is_none(),
        "{shipped} names tenants"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("ENTRYPOINT") && l.contains("/usr/local/bin/weir")));
}

#[test]
fn the_compose_stack_is_wired_together() {
    let compose = yaml(&deploy().join("compose.yaml"));
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for (name, service) in services {
        assert!(
            service.get("image").is_some() || service.get("build").is_some(),
            "{name}: no image"
        );
        let depends: Vec<String> = match &service["depends_on"] {
            Value::Array(list) => list
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect(),
            Value::Object(map) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        for dependency in depends {
            assert!(
                names.contains(dependency.as_str()),
                "{name} depends on unknown {dependency}"
            );
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    deploy().join(source).exists(),
                    "{name}: {source} does not exist"
                );
            }
        }
    }
    // The node talks to services of the stack.
    let env = &services["weir"]["environment"];
    assert!(names.contains(host_of(env["WEIR_KAFKA_BROKERS"].as_str().unwrap())));
    assert!(names.contains(host_of(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str().unwrap()
    )));
    // Region-wide quotas on the stack's Redis, started before the node.
    let redis = host_of(env["WEIR_REDIS_URL"].as_str().unwrap());
    assert!(names.contains(redis), "{redis}");
    assert!(services["weir"]["depends_on"].get(redis).is_some());
    // The Collector's exporters point at services of the stack.
    let collector = yaml(&deploy().join("observability/collector.yaml"));
    for exporter in collector["exporters"].as_object().unwrap().values() {
        let endpoint = exporter["endpoint"].as_str().unwrap();
        assert!(
            names.contains(host_of(endpoint)),
            "collector exports to unknown {endpoint}"
        );
    }
    // The node's ports are published, and the config, mounted over the
    // image's, is one weir accepts.
    let config = std::fs::read_to_string(deploy().join("compose/weir.toml")).unwrap();
    check_config(&config);
    // Stopping leaves time for the drain (30 s unless the config says) and
    // the flush.
    let drain_s = toml::from_str::<toml::Value>(&config).unwrap()["server"]
        .get("drain_timeout_ms")
        .and_then(|d| d.as_integer())
        .unwrap_or(30_000)
        / 1000;
    let grace = services["weir"]["stop_grace_period"].as_str().unwrap();
    let grace: i64 = grace.strip_suffix('s').unwrap().parse().unwrap();
    assert!(drain_s + FLUSH_S < grace, "stop_grace_period {grace}s");
    assert!(services["weir"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "./compose/weir.toml:/etc/weir/weir.toml:ro"));
    let published: BTreeSet<u16> = services["weir"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(published, listener_ports(&config));
    // Prometheus loads Weir's alert rules where they are mounted.
    let prometheus = yaml(&deploy().join("compose/prometheus.yml"));
    let rules = prometheus["rule_files"][0].as_str().unwrap();
    // Whether one of a service's volumes is mounted as `wanted` says.
    let mounts = |service: &str, wanted: &dyn Fn(&str) -> bool| {
        services[service]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| wanted(v.as_str().unwrap()))
    };
    assert!(mounts("prometheus", &|v| v
        .ends_with(&format!("observability/alerts.yml:{rules}:ro"))));
    // Grafana finds the dashboard where it is mounted.
    let dashboards = yaml(&deploy().join("compose/grafana/dashboards.yaml"));
    let path = dashboards["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(mounts("grafana", &|v| v
        .contains(&format!("dashboard.json:{path}/"))));
}

#[test]
fn the_kubernetes_manifests_agree_with_the_node() {
    let dir = deploy().join("k8s");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let mut objects = Vec::new();
    for resource in kustomization["resources"].as_array().unwrap() {
        objects.extend(documents(&dir.join(resource.as_str().unwrap())));
    }
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    for object in &objects {
        assert!(
            object["apiVersion"].is_string() && object["kind"].is_string(),
            "{object}"
        );
    }
    let config = find("ConfigMap", "weir")["data"]["weir.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    check_config(&config);
    let drain_ms = toml::from_str::<toml::Value>(&config).unwrap()["server"]["drain_timeout_ms"]
        .as_integer()
        .unwrap();

    let deployment = find("Deployment", "weir");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let container = &pod["spec"]["containers"][0];
    let ports: Vec<(String, u16)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    let port_numbers: BTreeSet<u16> = ports.iter().map(|(_, n)| *n).collect();
    assert_eq!(port_numbers, listener_ports(&config));
    let admin = ports
        .iter()
        .find(|(name, _)| name == "admin")
        .expect("an admin port")
        .1;
    // The port named admin is the config's admin listener.
    let admin_listen = toml::from_str::<toml::Value>(&config).unwrap()["server"]["admin_listen"]
        .as_str()
        .expect("the ConfigMap sets server.admin_listen")
        .to_owned();
    assert_eq!(
        admin_listen.rsplit(':').next().and_then(|p| p.parse().ok()),
        Some(admin),
        "{admin_listen}"
    );
    // Probes use the node's health routes on the admin listener.
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin");
    }
    // The pod gets time to drain and flush: preStop pause + drain + the
    // producer's flush < grace period.
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        pause + drain_ms / 1000 + FLUSH_S < grace,
        "grace {grace}s < {pause}s + {drain_ms}ms + {FLUSH_S}s"
    );
    // Unprivileged, as the image.
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 10001);
    assert_eq!(container["args"], serde_json::json!(["serve"]));
    // The config is read from a mounted directory: a file mounted by
    // subPath is never updated, so a reload would read the old one.
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let config_path = command
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("the container names its config");
    // Every mount has its volume, and the config mount is the image's path.
    let volumes: BTreeSet<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for mount in container["volumeMounts"].as_array().unwrap() {
        assert!(volumes.contains(mount["name"].as_str().unwrap()), "{mount}");
    }
    let config_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .expect("the config is mounted");
    assert!(config_mount["subPath"].is_null(), "{config_mount}");
    assert_eq!(
        Some(config_path),
        config_mount["mountPath"]
            .as_str()
            .map(|dir| format!("{dir}/weir.toml"))
            .as_deref()
    );
    // Paths in the config are mounted.
    let parsed: toml::Value = toml::from_str(&config).unwrap();
    for path in [
        parsed["tls"]["cert_path"].as_str().unwrap(),
        parsed["geoip"]["path"].as_str().unwrap(),
    ] {
        assert!(
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| path.starts_with(m["mountPath"].as_str().unwrap())),
            "{path} is not mounted"
        );
    }

    // Services select the pods and name their ports.
    for service in objects.iter().filter(|o| o["kind"] == "Service") {
        assert_eq!(&service["spec"]["selector"], labels, "{service}");
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert!(ports.iter().any(|(name, _)| name == target), "{target}");
        }
    }
    let admin_service = find("Service", "weir-admin");
    assert_eq!(
        admin_service["spec"]["type"], "ClusterIP",
        "the admin port stays inside"
    );
    assert_eq!(
        admin_service["metadata"]["annotations"]["prometheus.io/port"],
        admin.to_string()
    );
    // The Redis URL (with its password) comes from a Secret; without one
    // the pods still start, on per-pod limits.
    let redis_url = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "WEIR_REDIS_URL")
        .expect("WEIR_REDIS_URL is set from a Secret");
    let secret = &redis_url["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (&secret["name"], &secret["key"], &secret["optional"]),
        (&"weir-redis".into(), &"url".into(), &true.into())
    );
    // The optional in-cluster Redis: its Service selects its pods, on the
    // port the URL its comment gives uses.
    let redis = documents(&dir.join("redis.yaml"));
    let redis_pods = &redis
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Redis Deployment")["spec"]["template"];
    let redis_service = redis
        .iter()
        .find(|o| o["kind"] == "Service")
        .expect("a Redis Service");
    assert_eq!(
        &redis_service["spec"]["selector"],
        &redis_pods["metadata"]["labels"]
    );
    let text = std::fs::read_to_string(dir.join("redis.yaml")).unwrap();
    let name = redis_service["metadata"]["name"].as_str().unwrap();
    let port = redis_service["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert!(text.contains(&format!("url=redis://{name}:{port}")));
    let hpa = find("HorizontalPodAutoscaler", "weir");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "weir");
    assert_eq!(
        &find("PodDisruptionBudget", "weir")["spec"]["selector"]["matchLabels"],
        labels
    );
}
