//! `weir filter test`: run a filter over sample events on the author's
//! machine, with the same engine and caps as a node, and report each verdict.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sonic_rs::{JsonValueTrait as _, LazyValue};

use super::host::{BatchInput, Caps, FilterEngine, Verdict};

/// An upload as `weir filter test` reads it: the events' own text, as the
/// node hands it to filters (key order, spacing and number spelling kept).
#[derive(serde::Deserialize)]
struct Upload<'a> {
    #[serde(default)]
    meta: Option<Meta>,
    #[serde(borrow)]
    data: Vec<LazyValue<'a>>,
}

#[derive(serde::Deserialize)]
struct Meta {
    category: Option<String>,
}

/// Runs the filter at `path` with `config` over the events in `events_json`
/// (a JSON array of event objects, or a whole batch with `meta` and `data`),
/// and checks each replacement as a node does (a JSON object within
/// `max_event_bytes` and the default nesting limit). The report is text for
/// a terminal; `Err` when the events are not a batch, or the filter does not
/// load or fails.
pub fn run(
    path: &Path,
    config: &str,
    events_json: &str,
    caps: Caps,
    max_event_bytes: usize,
) -> Result<String, String> {
    let depth = crate::config::Limits::default().max_depth;
    if let Err(at) = crate::decode::check_depth(events_json.as_bytes(), depth) {
        return Err(format!(
            "events: nested deeper than {depth} levels at byte {at}"
        ));
    }
    let replacement_limits = super::EventLimits {
        max_bytes: max_event_bytes,
        ..super::EventLimits::of(&crate::config::Limits::default())
    };
    let not_a_batch = |e: sonic_rs::Error| {
        format!("events: expected a JSON array of events or a batch with a data array: {e}")
    };
    let (category, list) = match events_json.trim_start().starts_with('[') {
        true => (
            "local".to_owned(),
            sonic_rs::from_str::<Vec<LazyValue<'_>>>(events_json).map_err(not_a_batch)?,
        ),
        false => {
            let upload: Upload<'_> = sonic_rs::from_str(events_json).map_err(not_a_batch)?;
            let category = upload.meta.and_then(|m| m.category);
            (category.unwrap_or_else(|| "local".into()), upload.data)
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // Each event's id, client address (its `ip`) and text.
    let mut owned: Vec<(String, Option<std::net::IpAddr>, &str)> = Vec::new();
    for (i, event) in list.iter().enumerate() {
        if !event.is_object() {
            return Err(format!("events: event {i} is not a JSON object"));
        }
        let text = event.as_raw_str();
        let field = |name: &str| sonic_rs::get(text, [name]).ok();
        let id = field("id")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("event-{i}"));
        let ip = field("ip").and_then(|v| v.as_str()?.parse().ok());
        owned.push((id, ip, text));
    }
    let mut events = BatchInput::with_capacity("local", &category, now, owned.len());
    for (id, ip, text) in &owned {
        events.push(
            uuid::Uuid::now_v7().as_u128(),
            id,
            *ip,
            None,
            text.as_bytes(),
        );
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
    for ((id, _, _), verdict) in owned.iter().zip(verdicts) {
        let _ = match verdict {
            Verdict::Keep => writeln!(out, "  {id}: keep"),
            Verdict::Drop(reason) => writeln!(out, "  {id}: drop ({reason})"),
            Verdict::Replace(body) => match super::replacement(body, replacement_limits) {
                Ok(body) => writeln!(out, "  {id}: replace {body}"),
                Err(problem) => writeln!(
                    out,
                    "  {id}: filter_error (the filter replaced the event with {problem})"
                ),
            },
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
