//! Filter: the tenant's chain of user Wasm filters keeps, drops or rewrites
//! its events, between enrichment and Kafka.
//!
//! Each filter of the chain is called once per batch with the events still
//! pending, in a fresh sandboxed instance ([`host`]). Its verdicts apply in
//! order: `keep`, `replace`, `drop` (part code `filtered`: handled, not an
//! error). When a filter fails (trap, timeout, wrong number of verdicts, too
//! much output) the filter's policy decides: fail-open lets the events pass
//! unfiltered (logged), fail-closed gives them `filter_error`, retryable. A
//! replacement that is not a JSON object within the event's size and depth
//! limits is a failure of the filter for that event, and the policy decides
//! the same way for it (the call's other verdicts apply).
//!
//! Filters hot-reload: [`FilterSlot::reload_if_changed`] compiles a changed
//! file off the request path and swaps it in atomically; a batch already
//! running keeps the version it started with, and a version that does not
//! compile or whose `init` refuses its config never replaces a working one.

pub mod host;
pub mod local;
pub mod source;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use tracing::{field, Instrument};

use crate::stage_span;

use crate::config::{FilterConfig, OnError};
use crate::model::{Batch, Event, Part, PartCode};
use crate::ops::metrics::Metrics;
use crate::pipeline::decode::replacement;
pub use crate::pipeline::decode::EventLimits;
use host::{BatchInput, Caps, CompiledFilter, FilterEngine, FilterError, Verdict};

/// Logs a guest's line at the guest's own level, so that `RUST_LOG` and the
/// log level govern guest lines as they do the node's.
macro_rules! guest_log {
    ($level:expr, $($line:tt)+) => {
        match $level {
            "trace" => tracing::trace!($($line)+),
            "debug" => tracing::debug!($($line)+),
            "warn" => tracing::warn!($($line)+),
            "error" => tracing::error!($($line)+),
            _ => tracing::info!($($line)+),
        }
    };
}

/// One filter of a tenant's chain: its settings and the version in use.
pub struct FilterSlot {
    /// The file's (or URL's) stem, e.g. `redact_pii`.
    pub name: String,
    pub settings: FilterConfig,
    /// The component's file on disk: `path`, or the kept copy of `url`.
    file: Mutex<PathBuf>,
    current: ArcSwapOption<CompiledFilter>,
    /// Why the file on disk is not the version in use, if it is not.
    error: Mutex<Option<String>>,
    stamp: Mutex<Option<Stamp>>,
    /// Since when the first version is being fetched or compiled, while it
    /// is (see [`FilterSlot::load_or_defer`]).
    loading: Mutex<Option<Instant>>,
}

/// What the watcher compares to notice a changed file: its time, size and
/// inode (a file replaced by a rename, or a symlink moved to another file,
/// is another inode even when time and size are kept).
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .and_then(|m| Ok((m.modified()?, m.len(), m.ino())))
        .ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FilterSlot {
    /// Loads the filter now (fetching a remote component first); an error
    /// names the file or URL and the problem.
    pub fn load(
        engine: &Arc<FilterEngine>,
        settings: &FilterConfig,
    ) -> Result<Arc<FilterSlot>, String> {
        let failed = |e: &dyn std::fmt::Display| format!("filter {}: {e}", source_name(settings));
        let file = source::local_file(settings, engine.cache_dir()).map_err(|e| failed(&e))?;
        let slot = FilterSlot::empty(settings, file.clone());
        let compiled = compile(engine, settings, &file).map_err(|e| failed(&e))?;
        slot.current.store(Some(Arc::new(compiled)));
        Ok(Arc::new(slot))
    }

    /// A slot for a node's start: loaded now when that is quick (the
    /// component is on disk and compiled in the cache), otherwise empty
    /// and loading, for [`Self::finish_loading`] to fill once the node
    /// listens. A first compile (tens of seconds for a Python or JavaScript
    /// component) never holds up the tenants that do not use the filter.
    /// A `path` that cannot be read is an error now, as in [`Self::load`].
    pub fn load_or_defer(
        engine: &Arc<FilterEngine>,
        settings: &FilterConfig,
    ) -> Result<Arc<FilterSlot>, String> {
        let failed = |e: &dyn std::fmt::Display| format!("filter {}: {e}", source_name(settings));
        let kept = source::kept_file(settings, engine.cache_dir());
        let slot = FilterSlot::empty(
            settings,
            kept.clone().unwrap_or_else(|| settings.path.clone()),
        );
        // Compiled from the bytes read here: the file is read once.
        if let Some(file) = kept {
            let bytes = read(&file).map_err(|e| failed(&e))?;
            if engine.is_cached(&bytes, &settings.config) {
                let compiled = compile_bytes(engine, settings, &bytes).map_err(|e| failed(&e))?;
                slot.current.store(Some(Arc::new(compiled)));
                return Ok(Arc::new(slot));
            }
        }
        *lock(&slot.loading) = Some(Instant::now());
        Ok(Arc::new(slot))
    }

    /// Fetches and compiles a deferred slot's first version (blocking: off
    /// the request path). One that does not load is reported as a reload's
    /// would be (`/readyz`), and the watcher tries it again when its file
    /// changes (or, for a URL, every second).
    pub fn finish_loading(&self, engine: &Arc<FilterEngine>) {
        let Some(since) = *lock(&self.loading) else {
            return;
        };
        let loaded = source::local_file(&self.settings, engine.cache_dir())
            .map_err(|e| e.to_string())
            .and_then(|file| {
                *lock(&self.stamp) = stamp(&file);
                *lock(&self.file) = file.clone();
                compile(engine, &self.settings, &file).map_err(|e| e.to_string())
            });
        match loaded {
            Ok(compiled) => {
                tracing::info!(filter = %self.name, version = %compiled.version, source = %self.source(), seconds = since.elapsed().as_secs_f64(), "filter loaded");
                self.current.store(Some(Arc::new(compiled)));
                *lock(&self.error) = None;
            }
            Err(e) => {
                tracing::error!(filter = %self.name, source = %self.source(), error = %e, "filter does not load: its tenant's events are refused (retryable) until it does");
                *lock(&self.error) = Some(e);
            }
        }
        *lock(&self.loading) = None;
    }

    /// Whether the first version is still being fetched or compiled.
    pub fn loading(&self) -> Option<Duration> {
        lock(&self.loading).map(|since| since.elapsed())
    }

    /// A slot with no version yet, for `settings` whose component is `file`.
    fn empty(settings: &FilterConfig, file: PathBuf) -> FilterSlot {
        let named = match &settings.url {
            Some(url) => PathBuf::from(url.rsplit('/').next().unwrap_or("filter")),
            None => settings.path.clone(),
        };
        FilterSlot {
            name: named
                .file_stem()
                .map_or_else(|| "filter".to_owned(), |s| s.to_string_lossy().into_owned()),
            settings: settings.clone(),
            current: ArcSwapOption::empty(),
            error: Mutex::new(None),
            stamp: Mutex::new(stamp(&file)),
            file: Mutex::new(file),
            loading: Mutex::new(None),
        }
    }

    /// A slot for new `settings` that could not be loaded (`error`), which
    /// keeps serving `before`'s version: a remote component whose new hash
    /// is wrong or whose URL does not answer never replaces the working one.
    /// The watcher tries the new source again.
    pub fn carried(before: &FilterSlot, settings: &FilterConfig, error: String) -> Arc<FilterSlot> {
        tracing::error!(filter = %before.name, source = %source_name(settings), error = %error, "filter source not loaded; the previous version stays");
        Arc::new(FilterSlot {
            name: before.name.clone(),
            settings: settings.clone(),
            current: ArcSwapOption::new(before.current()),
            error: Mutex::new(Some(error)),
            stamp: Mutex::new(None),
            file: Mutex::new(lock(&before.file).clone()),
            loading: Mutex::new(None),
        })
    }

    /// Where the component comes from, for messages: its URL or path.
    pub fn source(&self) -> String {
        source_name(&self.settings)
    }

    /// The version in use.
    pub fn current(&self) -> Option<Arc<CompiledFilter>> {
        self.current.load_full()
    }

    /// Why the file on disk is not in use, if it is not.
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    /// Recompiles the file if it changed since it was last looked at; keeps
    /// the version in use when the new one fails. Blocking: call it off the
    /// request path.
    pub fn reload_if_changed(&self, engine: &Arc<FilterEngine>) {
        // Its first load is under way (`finish_loading`).
        if self.loading().is_some() {
            return;
        }
        // A remote source not had yet (a wrong hash, a URL that did not
        // answer): try it again.
        if self.settings.url.is_some() && self.error().is_some() {
            match source::local_file(&self.settings, engine.cache_dir()) {
                Ok(file) => {
                    *lock(&self.file) = file.clone();
                    *lock(&self.stamp) = stamp(&file);
                    self.swap(compile(engine, &self.settings, &file));
                }
                Err(e) => *lock(&self.error) = Some(e.to_string()),
            }
            return;
        }
        let file = lock(&self.file).clone();
        let now = stamp(&file);
        {
            let mut seen = lock(&self.stamp);
            if *seen == now {
                return;
            }
            *seen = now;
        }
        self.swap(compile(engine, &self.settings, &file));
    }

    /// Recompiles the file if its content is not the version in use,
    /// whatever its time stamp says: for a reload the operator asks for
    /// (`POST /admin/reload`, SIGHUP), after replacing a file in a way that
    /// keeps its time and size. Blocking, as [`Self::reload_if_changed`].
    pub fn reload_if_content_changed(&self, engine: &Arc<FilterEngine>) {
        if self.loading().is_some() {
            return;
        }
        if self.settings.url.is_some() && self.error().is_some() {
            return self.reload_if_changed(engine);
        }
        let file = lock(&self.file).clone();
        *lock(&self.stamp) = stamp(&file);
        let compiled = match read(&file) {
            Ok(bytes)
                if self
                    .current()
                    .is_some_and(|c| c.version == host::version(&bytes)) =>
            {
                return
            }
            Ok(bytes) => compile_bytes(engine, &self.settings, &bytes),
            Err(e) => Err(e),
        };
        self.swap(compiled);
    }

    /// Puts a new version in use, or records why the file is not.
    fn swap(&self, compiled: Result<CompiledFilter, FilterError>) {
        match compiled {
            Ok(compiled) => {
                tracing::info!(filter = %self.name, version = %compiled.version, source = %self.source(), "filter reloaded");
                self.current.store(Some(Arc::new(compiled)));
                *lock(&self.error) = None;
            }
            Err(e) => {
                tracing::error!(filter = %self.name, source = %self.source(), error = %e, "filter changed but does not load; the previous version stays");
                *lock(&self.error) = Some(e.to_string());
            }
        }
    }
}

/// Loads the slots of `slots` left loading at a node's start, one at a
/// time and the smallest component first (a Rust filter is in within a
/// second, not after a Python one); a URL not fetched yet goes last.
/// Blocking: off the request path. Returns how many do not load.
pub fn load_deferred(slots: &[Arc<FilterSlot>], engine: &Arc<FilterEngine>) -> usize {
    let mut loading: Vec<(u64, &Arc<FilterSlot>)> = slots
        .iter()
        .filter(|slot| slot.loading().is_some())
        .map(|slot| {
            let size = std::fs::metadata(&*lock(&slot.file)).map_or(u64::MAX, |m| m.len());
            (size, slot)
        })
        .collect();
    loading.sort_by_key(|&(size, _)| size);
    for (_, slot) in &loading {
        slot.finish_loading(engine);
    }
    loading
        .iter()
        .filter(|(_, slot)| slot.current().is_none())
        .count()
}

/// A filter's URL, or its path.
fn source_name(settings: &FilterConfig) -> String {
    match &settings.url {
        Some(url) => url.clone(),
        None => settings.path.display().to_string(),
    }
}

fn read(file: &Path) -> Result<Vec<u8>, FilterError> {
    std::fs::read(file).map_err(|e| FilterError::Read {
        path: file.display().to_string(),
        message: e.to_string(),
    })
}

fn compile(
    engine: &Arc<FilterEngine>,
    settings: &FilterConfig,
    file: &Path,
) -> Result<CompiledFilter, FilterError> {
    compile_bytes(engine, settings, &read(file)?)
}

fn compile_bytes(
    engine: &Arc<FilterEngine>,
    settings: &FilterConfig,
    bytes: &[u8],
) -> Result<CompiledFilter, FilterError> {
    let compiled = engine.compile(bytes, &settings.config, caps(settings))?;
    // `init` ran here (see `FilterEngine::compile`): its log lines are the load's.
    for (level, message) in &compiled.init_logs {
        guest_log!(level.as_str(), source = %source_name(settings), version = %compiled.version, guest_level = %level, "filter init: {message}");
    }
    Ok(compiled)
}

/// The caps of a filter's calls, from its settings.
pub fn caps(settings: &FilterConfig) -> Caps {
    Caps {
        memory_bytes: settings.memory_mb * 1024 * 1024,
        timeout: Duration::from_millis(settings.timeout_ms),
        max_output_bytes: settings.max_output_bytes,
        fuel: settings.fuel,
    }
}

/// Runs the tenant's chain over the batch's pending events.
pub async fn filter(
    chain: &[Arc<FilterSlot>],
    batch: &mut Batch<'_>,
    tenant: &str,
    limits: EventLimits,
    metrics: &Metrics,
    traced: bool,
) {
    for slot in chain {
        let pending: Vec<usize> = (0..batch.events.len())
            .filter(|&i| batch.events[i].part.is_none())
            .collect();
        if pending.is_empty() {
            return;
        }
        let Some(compiled) = slot.current() else {
            // No version yet: its first load runs, or failed. What it would
            // do is unknown, so its policy cannot apply: the events are
            // refused, retryable, whatever the policy.
            let why = unloaded(slot);
            for &i in &pending {
                let event = &mut batch.events[i];
                event.part = Some(Part::failed(
                    event.id.clone(),
                    PartCode::FilterError,
                    why.clone(),
                    true,
                ));
            }
            continue;
        };
        let span = stage_span!(
            traced,
            "filter",
            filter.name = %slot.name,
            filter.version = %compiled.version,
            tenant,
            category = batch.meta.category.as_str(),
            events = pending.len() as i64,
            kept = field::Empty,
            dropped = field::Empty,
            replaced = field::Empty,
            outcome = field::Empty,
            otel.status_code = field::Empty,
            otel.status_description = field::Empty,
        );
        let input = input_of(batch, &pending, tenant);
        let started = Instant::now();
        // The guest runs on this task, yielding to tokio every fuel slice (~0.25 ms).
        let called = compiled.call(&input).instrument(span.clone()).await;
        drop(input);
        // Guest log lines belong to the filter span, or to the request's
        // span when the filter's is not recorded.
        let log_parent = match span.is_none() {
            true => tracing::Span::current(),
            false => span.clone(),
        };
        for (level, message) in &called.logs {
            guest_log!(level.as_str(), parent: &log_parent, filter = %slot.name, tenant, guest_level = %level, "{message}");
        }
        let outcome = called.outcome;
        // What a failed call counted was never applied.
        if outcome.is_ok() {
            metrics.guest_counters(tenant, &slot.name, &called.counters);
        }
        let _entered = span.enter();
        let fail_closed = slot.settings.on_error == OnError::FailClosed;
        // How the filter failed, if it did, and on how many events.
        let failed = match outcome {
            Ok(verdicts) => apply(slot, batch, &pending, verdicts, limits, &span),
            Err(e) => {
                for &i in &pending {
                    refuse(slot, &mut batch.events[i], &e);
                }
                Some((e, pending.len()))
            }
        };
        metrics.filter_call(&slot.name, failed.is_none());
        let Some((e, events)) = failed else {
            span.record("outcome", "ok");
            continue;
        };
        span.record("outcome", "error");
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", field::display(&e));
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match fail_closed {
            false => {
                tracing::warn!(filter = %slot.name, tenant, error = %e, failed_events = events, elapsed_ms, "filter failed; events pass unfiltered (fail-open)");
            }
            true => {
                tracing::warn!(filter = %slot.name, tenant, error = %e, failed_events = events, elapsed_ms, "filter failed; events refused (fail-closed)");
            }
        }
    }
}

/// Why a slot has no version, for the events it refuses.
fn unloaded(slot: &FilterSlot) -> String {
    match (slot.loading(), slot.error()) {
        (Some(taken), _) => format!(
            "filter {} is not loaded yet (fetched and compiled since the node started, {} s so far): retry",
            slot.name,
            taken.as_secs()
        ),
        (None, Some(e)) => format!("filter {} does not load: {e}", slot.name),
        (None, None) => format!("filter {} is not loaded", slot.name),
    }
}

/// The pending events of `batch` as a filter call's input.
fn input_of<'a>(batch: &'a Batch<'_>, pending: &[usize], tenant: &'a str) -> BatchInput<'a> {
    let mut input = BatchInput::with_capacity(
        tenant,
        &batch.meta.category,
        batch.received_at,
        pending.len(),
    );
    for &i in pending {
        let event = &batch.events[i];
        let enrichment = event.enrichment.as_ref();
        input.push(
            enrichment.map_or(0, |e| e.backend_id.as_u128()),
            event.id.as_deref().unwrap_or_default(),
            enrichment.and_then(|e| e.client_ip),
            enrichment.and_then(|e| e.geo.as_deref()),
            event.raw.as_bytes(),
        );
    }
    input
}

/// Applies a call's verdicts to the pending events, in order, and records
/// their counts on the filter's span. Returns how the filter failed on some
/// events (an invalid replacement), and on how many.
fn apply(
    slot: &FilterSlot,
    batch: &mut Batch<'_>,
    pending: &[usize],
    verdicts: Vec<Verdict>,
    limits: EventLimits,
    span: &tracing::Span,
) -> Option<(FilterError, usize)> {
    let (mut kept, mut dropped, mut replaced) = (0, 0, 0);
    let mut failed: Option<(FilterError, usize)> = None;
    for (&i, verdict) in pending.iter().zip(verdicts) {
        let event = &mut batch.events[i];
        match verdict {
            Verdict::Keep => kept += 1,
            Verdict::Drop(reason) => {
                dropped += 1;
                event.part = Some(Part::failed(
                    event.id.clone(),
                    PartCode::Filtered,
                    format!("{}: {reason}", slot.name),
                    false,
                ));
            }
            Verdict::Replace(bytes) => match replacement(bytes, limits) {
                Ok(body) => {
                    replaced += 1;
                    event.raw = Cow::Owned(body);
                }
                // A failure of the filter for this event, as a trap is for
                // all of them: the policy decides.
                Err(problem) => {
                    let e = FilterError::Replacement(problem);
                    refuse(slot, event, &e);
                    match &mut failed {
                        Some((_, events)) => *events += 1,
                        None => failed = Some((e, 1)),
                    }
                }
            },
        }
    }
    span.record("kept", kept as i64);
    span.record("dropped", dropped as i64);
    span.record("replaced", replaced as i64);
    failed
}

/// An event the filter failed on. Fail-closed: refused, retryable;
/// fail-open: left as it was before this filter.
fn refuse(slot: &FilterSlot, event: &mut Event<'_>, e: &FilterError) {
    if slot.settings.on_error == OnError::FailClosed {
        event.part = Some(Part::failed(
            event.id.clone(),
            PartCode::FilterError,
            format!("filter {} failed: {e}", slot.name),
            true,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture component, with its one message spelt `message` (16
    /// bytes: every spelling makes a component of the same size).
    fn component(message: &str) -> Vec<u8> {
        assert_eq!(message.len(), 16);
        let text = include_str!("../../../tests/fixtures/no-snapshot.wat")
            .replace("init did not run", message);
        wat::parse_str(text).expect("the fixture is valid WAT")
    }

    /// A file replaced with the same size and time: the watcher sees a new
    /// inode; an asked-for reload (admin, SIGHUP) reads the content itself.
    #[test]
    fn a_replaced_file_is_reloaded_though_its_size_and_time_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.wasm");
        std::fs::write(&path, component("version number 1")).unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let settings: FilterConfig = toml::from_str(&format!("path = {path:?}")).unwrap();
        let engine = FilterEngine::new();
        let slot = FilterSlot::load(&engine, &settings).unwrap();
        let version = |slot: &FilterSlot| slot.current().unwrap().version.clone();
        let first = version(&slot);

        // Rewritten in place, time put back: same inode, size and time.
        let replace_in_place = |message: &str| {
            let file = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &file, &component(message)).unwrap();
            file.set_modified(modified).unwrap();
        };
        replace_in_place("version number 2");
        slot.reload_if_changed(&engine);
        assert_eq!(version(&slot), first, "the watcher cannot tell");
        slot.reload_if_content_changed(&engine);
        let second = version(&slot);
        assert_ne!(second, first, "an asked-for reload can");
        assert_eq!(second, host::version(&component("version number 2")));
        slot.reload_if_content_changed(&engine);
        assert_eq!(version(&slot), second, "the same content: nothing to do");

        // Replaced by a rename (as installers and `ln -sf` do), time kept.
        let new = dir.path().join("new.wasm");
        std::fs::write(&new, component("version number 3")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&new)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        std::fs::rename(&new, &path).unwrap();
        slot.reload_if_changed(&engine);
        assert_eq!(
            version(&slot),
            host::version(&component("version number 3"))
        );
    }
}
