//! Any TOML text either loads as a configuration or is refused with an
//! error that says where: toml's own (a line and column) or the
//! validation's (a key under one of the file's sections). Never a panic,
//! including with limits at their extremes: a configuration that loads is
//! then used as a node would use it (every tenant's limits on an upload,
//! its filters' event limits, its decompression cap; the topic template
//! rendered with the longest names).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_core::config::template::{Template, Values};
use weir_core::config::{Config, ConfigError};
use weir_core::decode::{decode_and_split, replacement, EventLimits};
use weir_core::encoding::{decompress, Encoding};

/// The sections of the file: every key a validation error names is under one.
const SECTIONS: [&str; 11] = [
    "server",
    "tls",
    "kafka",
    "spool",
    "quotas",
    "filters",
    "geoip",
    "log",
    "telemetry",
    "defaults",
    "tenants",
];

const UPLOAD: &[u8] =
    br#"{"meta":{"category":"c"},"data":[{"id":"a","n":[1,{"b":2}]},{"id":"b"},7]}"#;

fuzz_target!(|text: &[u8]| {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let config = match Config::parse(text) {
        Ok(config) => config,
        Err(message) => {
            assert!(message.contains("line "), "no place in {message:?}");
            return;
        }
    };
    match config.validate() {
        Ok(()) => use_it(&config),
        Err(ConfigError::Invalid { key, problem }) => {
            assert!(!problem.is_empty(), "{key}");
            let section = key.split(['.', '[']).next().unwrap_or_default();
            assert!(
                SECTIONS.contains(&section),
                "the key {key:?} names no section: {problem}"
            );
        }
        Err(other) => panic!("validation read or parsed a file: {other}"),
    }
});

fn use_it(config: &Config) {
    let mut limits: Vec<_> = config
        .tenants
        .iter()
        .map(|tenant| tenant.limits(&config.defaults))
        .collect();
    limits.push(config.defaults.clone());
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip, UPLOAD).expect("in memory");
    let gzip = Bytes::from(gzip.finish().expect("in memory"));
    for limits in &limits {
        let _ = decode_and_split(UPLOAD, limits, i64::MAX);
        let _ = replacement(br#"{"a":[[1]]}"#.to_vec(), EventLimits::of(limits));
        let _ = decompress(gzip.clone(), Encoding::Gzip, limits.max_decompressed_bytes);
    }
    let longest = "x".repeat(64);
    let topic = Template::topic(&config.kafka.topic_template).expect("validated");
    let values = Values {
        tenant: &longest,
        category: &longest,
        device_id: Some(&longest),
        app: None,
    };
    let name = topic
        .render(&values)
        .expect("a topic has no optional placeholder");
    assert!((1..=249).contains(&name.len()), "{name}");
    let key = Template::key(&config.kafka.key_template).expect("validated");
    let _ = key.render(&values);
}
