//! `weir filter test`: run a filter over sample events on the author's
//! machine, with the same engine and caps as a node, and report each verdict.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::host::{BatchInput, Caps, FilterEngine, Verdict};

/// Runs the filter at `path` with `config` over the events in `events_json`
/// (a JSON array of event objects, or a whole batch with `meta` and `data`).
/// The report is text for a terminal; `Err` when the filter does not load or fails.
pub fn run(path: &Path, config: &str, events_json: &str, caps: Caps) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(events_json).map_err(|e| format!("events: not JSON: {e}"))?;
    let (category, list) = match &value {
        serde_json::Value::Array(list) => ("local".to_owned(), list.clone()),
        serde_json::Value::Object(batch) => (
            batch
                .get("meta")
                .and_then(|m| m.get("category"))
                .and_then(|c| c.as_str())
                .unwrap_or("local")
                .to_owned(),
            batch
                .get("data")
                .and_then(|d| d.as_array())
                .cloned()
                .ok_or("events: a batch needs a data array")?,
        ),
        _ => return Err("events: expected a JSON array of events or a batch".into()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // Each event's id and body; the client address is the event's `ip`.
    let owned: Vec<(String, Option<std::net::IpAddr>, Vec<u8>)> = list
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let id = e
                .get("id")
                .and_then(|v| v.as_str())
                .map_or_else(|| format!("event-{i}"), str::to_owned);
            let ip = e.get("ip").and_then(|v| v.as_str()?.parse().ok());
            (id, ip, serde_json::to_vec(e).unwrap_or_default())
        })
        .collect();
    let mut events = BatchInput::with_capacity("local", &category, now, owned.len());
    for (id, ip, body) in &owned {
        events.push(uuid::Uuid::now_v7().as_u128(), id, *ip, None, body);
    }

    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let engine = FilterEngine::new();
    let started = Instant::now();
    let compiled = Arc::new(
        engine
            .compile(&bytes, config, caps)
            .map_err(|e| e.to_string())?,
    );
    let compile_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let called = futures::executor::block_on(compiled.call(&events));
    let call_ms = started.elapsed().as_secs_f64() * 1000.0;
    let logs: String = called
        .logs
        .iter()
        .map(|(level, message)| format!("\nlog {level}: {message}"))
        .collect();
    let verdicts = called
        .outcome
        .map_err(|e| format!("the filter failed: {e}{logs}"))?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "filter {} (version {}), {} events",
        path.display(),
        compiled.version,
        events.len()
    );
    for ((id, _, _), verdict) in owned.iter().zip(&verdicts) {
        let _ = match verdict {
            Verdict::Keep => writeln!(out, "  {id}: keep"),
            Verdict::Drop(reason) => writeln!(out, "  {id}: drop ({reason})"),
            Verdict::Replace(body) => {
                writeln!(out, "  {id}: replace {}", String::from_utf8_lossy(body))
            }
        };
    }
    let _ = match compiled.initialised {
        true => writeln!(
            out,
            "compile + init (once: calls start from its snapshot) {compile_ms:.1} ms, call (fresh instance, filter) {call_ms:.2} ms"
        ),
        false => writeln!(
            out,
            "compile + init check {compile_ms:.1} ms, call (fresh instance, init, filter) {call_ms:.2} ms"
        ),
    };
    for (level, message) in &compiled.init_logs {
        let _ = writeln!(out, "log {level} (init): {message}");
    }
    for (level, message) in &called.logs {
        let _ = writeln!(out, "log {level}: {message}");
    }
    for (name, value) in &called.counters {
        let _ = writeln!(out, "counter {name} = {value}");
    }
    Ok(out)
}
