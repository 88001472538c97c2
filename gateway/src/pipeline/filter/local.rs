//! `weir filter test`: run a filter over sample events on the author's
//! machine, with the same engine and caps as a node, and report each verdict.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::host::{BatchInput, Caps, FilterEngine, Verdict};
use crate::config::Limits;

/// Runs the filter at `path` with `config` over the events in `events_json`
/// (a JSON array of event objects, or a whole batch with `meta` and `data`).
/// The events are read as a node reads an upload, with `limits`: an event a
/// node would answer `invalid` or `too_large` is reported so and not
/// filtered, and the filter sees each other event's text as written. Each
/// replacement is checked as a node does. The report is text for a terminal; `Err` when the events are not
/// an upload a node takes, or the filter does not load or fails.
pub fn run(
    path: &Path,
    config: &str,
    events_json: &str,
    caps: Caps,
    limits: &Limits,
) -> Result<String, String> {
    // A bare list of events is the `data` of an upload.
    let wrapped = events_json.trim_start().starts_with('[');
    let upload: Cow<'_, str> = match wrapped {
        true => format!(r#"{{"meta":{{"category":"local"}},"data":{events_json}}}"#).into(),
        false => events_json.into(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let batch = crate::pipeline::decode::decode_and_split(upload.as_bytes(), limits, now).map_err(|reject| {
        let read_as = match wrapped {
            true => r#" (the list is read as the data of {"meta":{"category":"local"},"data":[…]}: positions count from there)"#,
            false => "",
        };
        format!("events: {} ({}){read_as}", reject.message, reject.error)
    })?;
    let replacement_limits = super::EventLimits::of(limits);
    let ids: Vec<String> = batch
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| e.id.clone().unwrap_or_else(|| format!("data[{i}]")))
        .collect();
    // The events a node would filter: those not refused already.
    let pending: Vec<usize> = (0..batch.events.len())
        .filter(|&i| batch.events[i].part.is_none())
        .collect();
    let mut events = BatchInput::with_capacity("local", &batch.meta.category, now, pending.len());
    for &i in &pending {
        let event = &batch.events[i];
        events.push(
            backend_id(&ids[i]),
            &ids[i],
            event.ip,
            None,
            event.raw.as_bytes(),
        );
    }

    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let engine = FilterEngine::new();
    // The node's cache, when the environment names one (as a node's does).
    if let Some(dir) = std::env::var_os("WEIR_FILTER_CACHE").filter(|d| !d.is_empty()) {
        engine.cache_in(dir.into());
    }
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
        batch.events.len()
    );
    let mut verdicts = verdicts.into_iter();
    for (i, event) in batch.events.iter().enumerate() {
        let id = &ids[i];
        if let Some(part) = &event.part {
            let message = part.message.as_deref().unwrap_or_default();
            let _ = writeln!(
                out,
                "  {id}: {} ({message}; not filtered)",
                part.code.as_str()
            );
            continue;
        }
        let _ = match verdicts.next() {
            Some(Verdict::Keep) => writeln!(out, "  {id}: keep"),
            Some(Verdict::Drop(reason)) => writeln!(out, "  {id}: drop ({reason})"),
            Some(Verdict::Replace(body)) => match super::replacement(body, replacement_limits) {
                Ok(body) => writeln!(out, "  {id}: replace {body}"),
                // A failure of the filter for this event: on a node, its
                // on_error decides (fail-open passes the event as it was).
                Err(problem) => writeln!(
                    out,
                    "  {id}: failed: replaced the event with {problem} (on a node, on_error decides)"
                ),
            },
            // (`call` checked that there is one verdict per event.)
            None => writeln!(out, "  {id}: no verdict"),
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
    let _ = writeln!(
        out,
        "memory of the call's instance {:.1} MiB (of the cap {} MiB)",
        called.memory_bytes as f64 / (1 << 20) as f64,
        caps.memory_bytes >> 20
    );
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

/// The backend id an event gets here: made from its id (a UUIDv8 of the
/// id's SHA-256), so that runs over the same events repeat, for a filter
/// that decides by backend id (`sample`). A node gives every event a new
/// UUIDv7 instead.
fn backend_id(id: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .as_u128()
}
