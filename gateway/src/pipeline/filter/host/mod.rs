//! The Wasm host: wasmtime's component model with a pooling allocator, each
//! filter compiled once per version into an `InstancePre` (as the snapshot
//! of its `init`, where wasmtime-wizer can take one), and a fresh `Store`
//! and instance for every batch call, with its caps.
//!
//! Caps per call: linear memory, all of the call's memories together (a
//! guest growing past it traps), CPU time (guests are fuel-metered and
//! yield to the async executor every [`FUEL_SLICE`] units, about a
//! quarter of a millisecond; the time spent inside the call's polls is added up, and
//! past the filter's budget the call is cancelled; host calls, which burn
//! no fuel, check the same deadline), optional fuel, and the bytes a call
//! may hand back. A trap or a timeout is an `Err` here; what it means for
//! the events is the chain's business. A call waits for a pooled instance
//! when the pool is full, and one filter takes at most two calls per core
//! of it (4 to [`MAX_CALLS_PER_FILTER`]).
//!
//! Why fuel slices and not an epoch deadline: an epoch needs a ticker thread
//! waking every millisecond. On a busy node that is a thousand context
//! switches and timer interrupts a second on the request path, which cost
//! more (perf: ≈10 µs of CPU per request at 3,000 requests/s) than metering
//! the guests (criterion, against the epoch build: +2 to +7% per call, e.g.
//! pass-through of 50 events 9.3 → 9.4 µs, redact-pii of 50 410 → 422 µs).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime_wizer::{WasmtimeWizerComponent, Wizer};

use wasmtime::component::{Component, ComponentExportIndex, Linker, TypedFunc, WasmStr};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, StoreContextMut, Trap,
};

wasmtime::component::bindgen!({
    path: "../proto/wit",
    world: "filter",
    // Calls run on the request's task and yield to tokio every fuel slice,
    // so a slow guest never holds a worker thread.
    exports: { default: async },
    // Events are lowered straight from the batch's own strings and bytes:
    // no per-event copy on the host side before the copy into the guest.
    ownership: Borrowing { duplicate_if_necessary: true },
});

mod lowering;
mod wasi;

pub use self::lowering::BatchInput;
use self::lowering::FlatBatch;
use self::wasi::{CallWorld, GuestWasi};
use self::weir::filter::host::Level;

/// Fuel (about one unit per Wasm instruction) a guest burns between two
/// yields to the executor: about a quarter of a millisecond of guest code.
/// The CPU deadline is checked at each yield, so this is also its
/// resolution; and every other task on the worker waits for at most this
/// long behind a guest (see `main`'s runtime, which looks at its sockets
/// and other threads' wake-ups every few polls). A quarter rather than a
/// whole millisecond, with the runtime's settings, took a quiet tenant's
/// p50 beside a saturating Python tenant from 32–41 ms to 10–13 ms
/// (`benches/neighbours.sh`), for no measurable cost per call (criterion,
/// batch 500: Python pass-through +3%, JS +1%, redact-pii −7%: noise).
pub const FUEL_SLICE: u64 = 250_000;
/// Component instances that may exist at once: calls beyond it wait for
/// one to end ([`FilterEngine`]'s permits), so a full pool never fails a
/// call (which, fail-open, would let events pass unfiltered).
pub const MAX_INSTANCES: u32 = 128;
/// Instances beyond [`MAX_INSTANCES`] kept for loading filters (a trial
/// instance, a snapshot), so a reload under load finds a slot.
const LOAD_INSTANCES: u32 = 8;
/// Calls one filter of one tenant may run at once, so that a tenant whose
/// filter is slow takes at most this share of the pool, not all of it.
pub const MAX_CALLS_PER_FILTER: u32 = 16;

/// Calls one filter of one tenant runs at once on this machine: two per
/// core, from 4 up to [`MAX_CALLS_PER_FILTER`]. More would not run sooner
/// (the cores are busy) and would crowd other tenants out of the cores:
/// measured with a Python pass-through saturating a 2-core node, a quiet
/// tenant's p50 was 54 ms with 16 calls at once and 33 ms with 4 (8 ms
/// with a Rust load tenant), for the same Python throughput.
fn calls_per_filter() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cores).clamp(4, MAX_CALLS_PER_FILTER as usize)
}
/// Core instances one call may make: a component made of several modules
/// has several (a Rust filter 1 to 4; componentize-py's Python 14 or more,
/// 38 built with `--stub-wasi`; ComponentizeJS a handful). The pool holds
/// this many per instance, and as many tables.
const MAX_CORE_INSTANCES_PER_CALL: u32 = 64;
/// Linear memories one call may have (most modules share one).
const MAX_MEMORIES_PER_CALL: u32 = 8;
/// Bytes of each pooled memory and stack reset in place (kept resident)
/// rather than handed back to the kernel between calls.
const KEEP_RESIDENT: usize = 4 << 20;
/// Log lines and bytes a single call may leave, and its counters and the
/// bytes of a counter's name: the host keeps no more of what a guest hands
/// it than this, however much it hands.
const MAX_LOG_LINES: usize = 100;
const MAX_LOG_LINE: usize = 1024;
const MAX_COUNTERS: usize = 64;
/// The counter further names of a call add to, past [`MAX_COUNTERS`].
const OTHER_COUNTER: &str = "other";
/// What the host takes from a guest at once in a call, at least (see
/// `CompiledFilter::call_hostcall_bytes`), whatever the filter's output
/// cap: room for a host call's arguments.
const MIN_HOSTCALL_BYTES: usize = 64 << 10;
const MAX_COUNTER_NAME: usize = 128;

/// Why a filter could not be loaded or did not give verdicts.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FilterError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("not a valid weir:filter component: {0}")]
    Compile(String),
    /// The host's own Wasm engine could not be set up (e.g. the instance
    /// pool's memory reservation refused): no fault of the filter's.
    #[error("cannot set up the Wasm engine: {0}")]
    Engine(String),
    #[error("init refused the config: {0}")]
    Init(String),
    #[error("ran past its CPU deadline of {0} ms")]
    Timeout(u64),
    #[error("ran out of its fuel of {0}")]
    OutOfFuel(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned {got} verdicts for {expected} events")]
    WrongCount { got: usize, expected: usize },
    #[error("returned {got} bytes, more than its limit of {limit}")]
    TooMuchOutput { got: usize, limit: usize },
    #[error("handed the host more than its limit of {limit} bytes at once")]
    TooMuchData { limit: usize },
    /// A `replace` verdict whose body is not a JSON object within the
    /// event's limits (see `filter::replacement`): a failure of the filter
    /// for that one event.
    #[error("replaced the event with {0}")]
    Replacement(String),
}

/// Caps of one filter's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub memory_bytes: usize,
    pub timeout: Duration,
    pub max_output_bytes: usize,
    /// Wasm fuel (about one unit per instruction) of one call (and of
    /// `init`, where it runs): an exact, repeatable CPU cap, unlike the
    /// timeout (every guest is metered anyway). `None`: the timeout alone.
    pub fuel: Option<u64>,
}

/// What a call's guest asked of the host, and the call's limits.
pub struct HostState {
    limits: CallLimits,
    /// The call's CPU deadline, for host calls (see [`Deadline`]).
    deadline: Deadline,
    pub logs: Vec<(String, String)>,
    pub counters: BTreeMap<String, u64>,
    /// What the call's WASI clocks and randomness are made from.
    world: CallWorld,
    /// WASI, for a guest that imports it: made at its first WASI call.
    wasi: Option<Box<GuestWasi>>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("logs", &self.logs)
            .field("counters", &self.counters)
            .field("wasi", &self.wasi.is_some())
            .finish()
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        let wasi = self.wasi();
        wasmtime_wasi_http::WasiHttpCtxView {
            hooks: &mut wasi.deny_http,
            table: &mut wasi.table,
            ctx: &mut wasi.http,
        }
    }
}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        let wasi = self.wasi();
        wasmtime_wasi::WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

/// A call's memory cap, over all its linear memories together (a component
/// of several modules has one per module), and its count of instances,
/// memories and tables.
#[derive(Debug)]
struct CallLimits {
    memory_cap: usize,
    memory_used: usize,
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let used = self.memory_used + desired.saturating_sub(current);
        if used > self.memory_cap {
            // A trap rather than a failed `memory.grow`: a guest that cannot
            // get memory has nothing better to do than fail (Rust aborts).
            wasmtime::bail!(
                "forcing trap when growing memory to {desired} bytes: the filter's memory cap is {} bytes",
                self.memory_cap
            );
        }
        self.memory_used = used;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Bounded by the pool's table size.
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES_PER_CALL as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_CALL as usize
    }

    fn tables(&self) -> usize {
        MAX_CORE_INSTANCES_PER_CALL as usize
    }
}

/// When a call's CPU budget runs out, as seen from a host call.
///
/// The budget is checked where the guest yields, every [`FUEL_SLICE`] of
/// fuel; but host calls burn no fuel, so a guest that loops over host calls
/// (say, logging a large string) could run long past its budget before it
/// yields. [`cpu_capped`] sets the instant at which the budget runs out at
/// each resumption of the call, and the host imports refuse to run past it.
#[derive(Debug, Clone, Default)]
struct Deadline(Arc<AtomicU64>);

impl Deadline {
    /// Nanoseconds since the node's first call, the clock deadlines are kept in.
    fn now() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    fn set(&self, budget_left: Duration) {
        let at = Self::now().saturating_add(budget_left.as_nanos() as u64);
        self.0.store(at, Ordering::Relaxed);
    }

    fn passed(&self) -> bool {
        let at = self.0.load(Ordering::Relaxed);
        at != 0 && Self::now() >= at
    }
}

/// The error a host import stops a call with when its CPU budget ran out.
#[derive(Debug, thiserror::Error)]
#[error("ran past its CPU deadline in a host call")]
struct PastDeadline;

impl HostState {
    fn new(memory_cap: usize) -> HostState {
        HostState {
            limits: CallLimits {
                memory_cap,
                memory_used: 0,
            },
            deadline: Deadline::default(),
            logs: Vec::new(),
            counters: BTreeMap::new(),
            world: CallWorld::default(),
            wasi: None,
        }
    }

    /// The call's WASI, made at the guest's first WASI call.
    fn wasi(&mut self) -> &mut GuestWasi {
        let world = self.world;
        self.wasi
            .get_or_insert_with(|| Box::new(GuestWasi::new(world)))
    }

    /// The call's log lines: the guest's `log` calls, then what it wrote to
    /// stdout (`info`) and stderr (`warn`), within the call's line caps.
    fn into_logs(self) -> Vec<(String, String)> {
        let mut logs = self.logs;
        if let Some(wasi) = self.wasi {
            for (level, stream) in [("info", &wasi.stdout), ("warn", &wasi.stderr)] {
                for line in stream.lines() {
                    if logs.len() >= MAX_LOG_LINES {
                        break;
                    }
                    logs.push((level.to_owned(), prefix(&line, MAX_LOG_LINE).to_owned()));
                }
            }
        }
        logs
    }
}

/// The `weir:filter/host` imports, added by hand rather than by the
/// generated `add_to_linker` so that they see the guest's strings where they
/// lie ([`WasmStr`]) instead of a host copy of each whole string: a guest
/// may hand over strings as large as its memory, and the host keeps at most
/// a line of each. Each import also checks the call's CPU deadline.
fn add_host_imports(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut host = linker.instance("weir:filter/host@0.1.0")?;
    host.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, HostState>, (level, message): (Level, WasmStr)| {
            if store.data().deadline.passed() {
                return Err(PastDeadline.into());
            }
            if store.data().logs.len() >= MAX_LOG_LINES {
                return Ok(());
            }
            let line = prefix(&message.to_str(&store)?, MAX_LOG_LINE).to_owned();
            let level = match level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            };
            store.data_mut().logs.push((level.to_owned(), line));
            Ok(())
        },
    )?;
    host.func_wrap(
        "count",
        |mut store: StoreContextMut<'_, HostState>, (name, delta): (WasmStr, u64)| {
            if store.data().deadline.passed() {
                return Err(PastDeadline.into());
            }
            let name = prefix(&name.to_str(&store)?, MAX_COUNTER_NAME).to_owned();
            let counters = &mut store.data_mut().counters;
            // Past the cap (less one, kept for it), new names share `other`.
            let name = match counters.len() < MAX_COUNTERS - 1 || counters.contains_key(&name) {
                true => name,
                false => OTHER_COUNTER.to_owned(),
            };
            let count = counters.entry(name).or_default();
            *count = count.saturating_add(delta);
            Ok(())
        },
    )?;
    Ok(())
}

/// At most the first `max` bytes of `text`, cut at a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

/// The engine shared by every filter of the node, made when the first
/// filter is compiled: a node without filters has none.
pub struct FilterEngine {
    runtime: OnceLock<Arc<Runtime>>,
    /// Instances alive now, of every filter (the pool's use).
    live: Arc<AtomicU64>,
    /// One per instance a call may use: calls wait for one (fairly, in
    /// order) rather than fail when the pool is full.
    permits: Arc<Semaphore>,
    /// Where compiled filters are kept (`filters_cache_path`), if anywhere.
    cache: OnceLock<PathBuf>,
}

/// One wasmtime engine with its pool and host imports.
struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
}

impl Runtime {
    fn new() -> Result<Arc<Runtime>, FilterError> {
        let mut pool = PoolingAllocationConfig::default();
        // Room for every call's most (see `CallLimits`): with calls waiting
        // for a permit, the pool never runs out.
        let per_call = MAX_CORE_INSTANCES_PER_CALL;
        // (Plus a few instances for loading filters, which take no permit.)
        let instances = MAX_INSTANCES + LOAD_INSTANCES;
        pool.total_component_instances(instances)
            .total_core_instances(instances * per_call)
            .total_memories(instances * MAX_MEMORIES_PER_CALL)
            .total_tables(instances * per_call)
            .max_core_instances_per_component(per_call)
            .max_memories_per_component(MAX_MEMORIES_PER_CALL)
            .max_tables_per_component(per_call)
            .max_memory_size(1 << 30)
            // A fresh instance per batch reuses a pooled slot: reset only the
            // pages the last call dirtied (PAGEMAP_SCAN, Linux 6.7+) and keep
            // them mapped, instead of `madvise` and a page fault per page on
            // the next call. Measured: see benches/benches/filters.rs.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Every guest is metered: fuel slices are its yield points and
            // CPU deadline checks, and the optional exact cap.
            .consume_fuel(true)
            // Guests are not debugged here: no backtrace capture on every trap.
            .wasm_backtrace_max_frames(None)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // For filter authors: perf names the guests' functions (guest-sdk/README.md).
        if std::env::var_os("WEIR_FILTER_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        add_host_imports(&mut linker).map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        // WASI 0.2 for Python and JavaScript guests, denied all a filter
        // must not have (see `wasi`).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        Ok(Arc::new(Runtime { engine, linker }))
    }
}

impl FilterEngine {
    pub fn new() -> Arc<FilterEngine> {
        Arc::new(FilterEngine {
            runtime: OnceLock::new(),
            live: Arc::default(),
            permits: Arc::new(Semaphore::new(MAX_INSTANCES as usize)),
            cache: OnceLock::new(),
        })
    }

    /// Keeps compiled filters in `dir`, so that a restart or a reload of an
    /// unchanged filter (same component, same config) skips compiling it
    /// and running its `init` (tens of seconds for a Python or JavaScript
    /// component). Set once, before the first compile.
    pub fn cache_in(&self, dir: PathBuf) {
        let _ = self.cache.set(dir);
    }

    /// The cache directory, if any (remote components are kept there too).
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.get().map(PathBuf::as_path)
    }

    /// The cache file of `bytes` with `config` on this engine: its name
    /// holds the component's hash, the config's and the engine's settings
    /// (wasmtime's compatibility hash: another wasmtime or other settings
    /// never read it).
    fn cached_path(&self, runtime: &Runtime, bytes: &[u8], config: &str) -> Option<PathBuf> {
        let dir = self.cache.get()?;
        let mut engine = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&runtime.engine.precompile_compatibility_hash(), &mut engine);
        let key = Sha256::new()
            .chain_update(Sha256::digest(bytes))
            .chain_update(Sha256::digest(config.as_bytes()))
            .chain_update(std::hash::Hasher::finish(&engine).to_le_bytes())
            .finalize();
        Some(dir.join(format!("{}.cwasm", hex::encode(&key[..16]))))
    }

    /// Whether `bytes` with `config` is compiled in the cache already, so
    /// that loading it takes a fraction of a second.
    pub fn is_cached(&self, bytes: &[u8], config: &str) -> bool {
        self.runtime()
            .ok()
            .and_then(|runtime| self.cached_path(&runtime, bytes, config))
            .is_some_and(|path| path.exists())
    }

    /// A compiled filter from the cache: `(component, initialised)`. The
    /// file is `[initialised: 1 byte][SHA-256 of the artifact][artifact]`:
    /// a damaged or half-written file is never deserialized (that would be
    /// undefined behaviour), it is compiled again instead.
    fn from_cache(runtime: &Runtime, path: &std::path::Path) -> Option<(Component, bool)> {
        let file = std::fs::read(path).ok()?;
        let (initialised, rest) = file.split_first()?;
        let (digest, artifact) = rest.split_at_checked(32)?;
        if Sha256::digest(artifact).as_slice() != digest {
            tracing::warn!(path = %path.display(), "a cached compiled filter is damaged: compiling it again");
            // Gone, so that the new compile is kept in its place.
            let _ = std::fs::remove_file(path);
            return None;
        }
        // SAFETY: the artifact is byte for byte one this engine serialized
        // (`to_cache`, checked by its SHA-256 above) into the node's own
        // cache directory, in a file named for this engine's settings;
        // wasmtime checks its header and version too.
        let component = unsafe { Component::deserialize(&runtime.engine, artifact) }.ok()?;
        Some((component, *initialised == 1))
    }

    /// Keeps a compiled filter (atomically: a crash leaves no half file).
    fn to_cache(path: &std::path::Path, component: &Component, initialised: bool) {
        let Ok(artifact) = component.serialize() else {
            return;
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // A name of this process and moment: two nodes sharing the
            // directory never write into one partial file.
            static WRITES: AtomicU64 = AtomicU64::new(0);
            let partial = path.with_extension(format!(
                "{}.{}.partial",
                std::process::id(),
                WRITES.fetch_add(1, Ordering::Relaxed)
            ));
            let mut file = Vec::with_capacity(artifact.len() + 33);
            file.push(u8::from(initialised));
            file.extend_from_slice(&Sha256::digest(&artifact));
            file.extend_from_slice(&artifact);
            std::fs::write(&partial, &file)?;
            std::fs::rename(&partial, path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep a compiled filter in the cache: it is compiled again at the next start");
        }
    }

    /// Reads how many filter instances are alive (at most [`MAX_INSTANCES`]).
    pub fn instances(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let live = self.live.clone();
        move || live.load(Ordering::Relaxed)
    }

    fn runtime(&self) -> Result<Arc<Runtime>, FilterError> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime.clone());
        }
        // Two first compilations at once may both make one; one is kept.
        let runtime = Runtime::new()?;
        Ok(self.runtime.get_or_init(|| runtime).clone())
    }

    /// Compiles a component and checks it: it must instantiate with only the
    /// host's imports, and its `init` must accept `config`. Where it can,
    /// `init` runs here, once, and every call starts from the state it left
    /// (see [`FilterEngine::snapshot`]).
    pub fn compile(
        self: &Arc<Self>,
        bytes: &[u8],
        config: &str,
        caps: Caps,
    ) -> Result<CompiledFilter, FilterError> {
        let version = version(bytes);
        let runtime = self.runtime()?;
        let cached = self.cached_path(&runtime, bytes, config);
        let (component, initialised, init_logs) = match cached
            .as_deref()
            .and_then(|p| Self::from_cache(&runtime, p))
        {
            Some((component, initialised)) => (component, initialised, Vec::new()),
            None => {
                let snapshot = self.snapshot(&runtime, bytes, config, caps)?;
                let initialised = snapshot.is_some();
                let (bytes, init_logs) = match snapshot {
                    Some(Snapshot {
                        component,
                        init_logs,
                    }) => (component, init_logs),
                    None => (bytes.to_vec(), Vec::new()),
                };
                let component = Component::new(&runtime.engine, &bytes)
                    .map_err(|e| FilterError::Compile(format!("{e:#}")))?;
                (component, initialised, init_logs)
            }
        };
        let mut compiled = self.prepare(&runtime, component, config, caps, version, initialised)?;
        // A trial instance: `init`, where it runs in every call, must accept
        // the config, so a filter that refuses it never goes live. And the
        // type check of `filter` against the host's flat batch, once (each
        // call then takes the function unchecked).
        let mut store = compiled.store(compiled.load_hostcall_bytes());
        let instance = compiled.instantiate_at_load(&mut store)?;
        instance
            .get_typed_func::<(FlatBatch<'_>,), (Vec<Verdict>,)>(
                &mut store,
                &compiled.filter_export,
            )
            .map_err(|e| FilterError::Compile(format!("{e:#}")))?;
        compiled.init_logs = match initialised {
            true => init_logs,
            false => store.into_data().into_logs(),
        };
        if let Some(path) = cached.filter(|p| !p.exists()) {
            Self::to_cache(&path, compiled.pre.instance_pre().component(), initialised);
        }
        Ok(compiled)
    }

    /// Runs `init(config)` once, under the filter's caps, and snapshots the
    /// instance it leaves (wasmtime-wizer): the snapshot is a component
    /// whose memory and globals start where `init` left them, so calls skip
    /// `init` (which may be costly: parsing a large config, building
    /// tables) and still start from a fresh instance. `init` is
    /// deterministic, as a guest has no clock, randomness or I/O, so the
    /// state is the same as running it again.
    ///
    /// `Ok(None)` when the component cannot be snapshot (wizer takes a
    /// subset of components, e.g. none that mutate tables): then `init`
    /// runs in every call, as before. A refused config, a trap or a
    /// timeout in `init` is an error either way.
    fn snapshot(
        self: &Arc<Self>,
        runtime: &Arc<Runtime>,
        bytes: &[u8],
        config: &str,
        caps: Caps,
    ) -> Result<Option<Snapshot>, FilterError> {
        let wizer = Wizer::new();
        let Ok((cx, instrumented)) = wizer.instrument_component(bytes) else {
            return Ok(None);
        };
        let Ok(probe) = Component::new(&runtime.engine, &instrumented)
            .map_err(|e| FilterError::Compile(format!("{e:#}")))
            .and_then(|c| self.prepare(runtime, c, config, caps, String::new(), false))
        else {
            return Ok(None);
        };
        let mut store = probe.store(probe.load_hostcall_bytes());
        let instance = probe.instantiate_at_load(&mut store)?;
        let snapshot = futures::executor::block_on(wizer.snapshot_component(
            &cx,
            &mut WasmtimeWizerComponent {
                store: &mut store,
                instance,
            },
        ));
        Ok(snapshot.ok().map(|component| Snapshot {
            component,
            init_logs: store.into_data().into_logs(),
        }))
    }

    /// Links a compiled component to the host's imports and finds its exports.
    fn prepare(
        self: &Arc<Self>,
        runtime: &Arc<Runtime>,
        component: Component,
        config: &str,
        caps: Caps,
        version: String,
        initialised: bool,
    ) -> Result<CompiledFilter, FilterError> {
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .and_then(FilterPre::new)
            .map_err(|e| FilterError::Compile(unprovided_import(&e)))?;
        let indices = FilterIndices::new(pre.instance_pre())
            .map_err(|e| FilterError::Compile(format!("{e:#}")))?;
        let filter_export = component
            .get_export_index(None, "filter")
            .ok_or_else(|| FilterError::Compile("no `filter` export".into()))?;
        Ok(CompiledFilter {
            live: self.live.clone(),
            permits: self.permits.clone(),
            own_permits: Arc::new(Semaphore::new(calls_per_filter())),
            runtime: runtime.clone(),
            pre,
            indices,
            filter_export,
            config: config.to_owned(),
            caps,
            version,
            initialised,
            init_logs: Vec::new(),
            imports_wasi: component
                .component_type()
                .imports(&runtime.engine)
                .any(|(name, _)| name.starts_with("wasi:")),
        })
    }
}

/// Why a component does not link: an import the host does not provide is
/// named as such (wasmtime says it in its own words, e.g. "component
/// imports instance `x`, but a matching implementation was not found").
fn unprovided_import(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    let named = text
        .split_once("imports instance `")
        .or_else(|| text.split_once("imports function `"))
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    match named {
        Some(name) => format!(
            "it imports `{name}`, which Weir does not provide to filters (they get weir:filter/host and WASI 0.2 without files, network or environment): {text}"
        ),
        None => text,
    }
}

/// A filter's version: the first 16 hex digits of its component's SHA-256.
pub fn version(component: &[u8]) -> String {
    hex::encode(&Sha256::digest(component)[..8])
}

/// A component as its `init` left it, and what `init` logged.
struct Snapshot {
    component: Vec<u8>,
    init_logs: Vec<(String, String)>,
}

/// One filter version, compiled and ready to instantiate.
pub struct CompiledFilter {
    runtime: Arc<Runtime>,
    live: Arc<AtomicU64>,
    /// The pool's permits ([`FilterEngine`]), and this filter's share of them.
    permits: Arc<Semaphore>,
    own_permits: Arc<Semaphore>,
    pre: FilterPre<HostState>,
    indices: FilterIndices,
    /// The `filter` export, typed as [`FlatBatch`] → verdicts.
    filter_export: ComponentExportIndex,
    config: String,
    pub caps: Caps,
    /// First 16 hex digits of the component's SHA-256.
    pub version: String,
    /// Whether `init` already ran (the component is its snapshot), or runs
    /// in every call.
    pub initialised: bool,
    /// What the guest logged in `init` when the filter was loaded.
    pub init_logs: Vec<(String, String)>,
    /// The component imports WASI (a Python or JavaScript one, say).
    imports_wasi: bool,
}

/// Counts an instance as alive until dropped (also when a call is cancelled).
struct Alive<'a>(&'a AtomicU64);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The result of one call: the verdicts or why there are none, and what
/// the guest logged and counted either way.
#[derive(Debug)]
pub struct Called {
    pub outcome: Result<Vec<Verdict>, FilterError>,
    /// Linear memory the call's instance held at its end, all its memories
    /// together (what the memory cap is checked against).
    pub memory_bytes: usize,
    pub logs: Vec<(String, String)>,
    pub counters: BTreeMap<String, u64>,
}

impl CompiledFilter {
    /// A fresh store with this filter's caps, which lets wasmtime copy at
    /// most `hostcall_bytes` out of the guest at once (see
    /// [`CompiledFilter::call_hostcall_bytes`]).
    fn store(&self, hostcall_bytes: usize) -> Store<HostState> {
        let state = HostState::new(self.caps.memory_bytes);
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_hostcall_fuel(hostcall_bytes);
        // The filter's exact fuel cap, or in effect none; either way the guest
        // yields every slice, where the CPU deadline is checked (`cpu_capped`).
        // (Neither call fails: fuel is on and the interval is not 0.)
        let _ = store.set_fuel(self.caps.fuel.unwrap_or(u64::MAX));
        let _ = store.fuel_async_yield_interval(Some(FUEL_SLICE));
        store
    }

    /// What wasmtime may copy out of the guest at once in a call on
    /// `events` events (its verdicts, or a host call's arguments): the output
    /// cap, with room for the verdicts themselves. Without it the verdicts
    /// are copied whole before their size is checked, and lists may alias:
    /// a guest pointing every replacement at one 4 MiB buffer had the host
    /// allocate 128 MiB (wasmtime's default) per call. Never below what a
    /// host call needs.
    fn call_hostcall_bytes(&self, events: usize) -> usize {
        self.caps
            .max_output_bytes
            .max(MIN_HOSTCALL_BYTES)
            .saturating_add(events.saturating_mul(std::mem::size_of::<Verdict>()))
    }

    /// What wasmtime may copy out of the guest at once while a filter is
    /// loaded: its whole memory, which a snapshot of `init`'s state reads,
    /// and which the memory cap bounds.
    fn load_hostcall_bytes(&self) -> usize {
        self.caps.memory_bytes.saturating_add(MIN_HOSTCALL_BYTES)
    }

    /// A fresh instance, initialised with the tenant's config (by the
    /// snapshot it is made from, or by calling `init`).
    async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> Result<wasmtime::component::Instance, FilterError> {
        let instance = self
            .pre
            .instance_pre()
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| self.failure(e))?;
        if self.initialised {
            return Ok(instance);
        }
        self.indices
            .load(&mut *store, &instance)
            .map_err(|e| self.failure(e))?
            .call_init(&mut *store, &self.config)
            .await
            .map_err(|e| self.failure(e))?
            .map_err(FilterError::Init)?;
        Ok(instance)
    }

    /// An instance made (and initialised) while the filter is loaded, off
    /// the request path, under the same CPU cap as a call.
    fn instantiate_at_load(
        &self,
        store: &mut Store<HostState>,
    ) -> Result<wasmtime::component::Instance, FilterError> {
        let deadline = store.data().deadline.clone();
        futures::executor::block_on(cpu_capped(
            self.instantiate(store),
            self.caps.timeout,
            &deadline,
        ))
        .unwrap_or(Err(self.timed_out()))
    }

    fn timed_out(&self) -> FilterError {
        FilterError::Timeout(self.caps.timeout.as_millis() as u64)
    }

    /// Runs the filter over `events` in a fresh instance.
    pub async fn call(&self, batch: &BatchInput<'_>) -> Called {
        // This filter's share first, so a call waiting for it holds none of
        // the pool. (Neither semaphore is ever closed.)
        let _own = self.own_permits.acquire().await.ok();
        let _pool = self.permits.acquire().await.ok();
        self.live.fetch_add(1, Ordering::Relaxed);
        let _alive = Alive(&self.live);
        let mut store = self.store(self.call_hostcall_bytes(batch.len()));
        // Only a guest that imports WASI reads its clock and randomness:
        // the others (every Rust filter) skip hashing the batch for a seed.
        if self.imports_wasi {
            store.data_mut().world = CallWorld {
                seed: batch.seed(),
                wall_ms: batch.received_at(),
            };
        }
        let deadline = store.data().deadline.clone();
        let outcome = cpu_capped(self.run(&mut store, batch), self.caps.timeout, &deadline)
            .await
            .unwrap_or(Err(self.timed_out()));
        let mut state = store.into_data();
        let counters = std::mem::take(&mut state.counters);
        Called {
            outcome,
            memory_bytes: state.limits.memory_used,
            logs: state.into_logs(),
            counters,
        }
    }

    async fn run(
        &self,
        store: &mut Store<HostState>,
        batch: &BatchInput<'_>,
    ) -> Result<Vec<Verdict>, FilterError> {
        let instance = self.instantiate(store).await?;
        let func = instance
            .get_func(&mut *store, self.filter_export)
            .ok_or_else(|| FilterError::Trap("no `filter` export".into()))?;
        // SAFETY: this component's `filter` passed the type check for these
        // types in `compile`, and every instance comes from the same component.
        let filter = unsafe { TypedFunc::<(FlatBatch<'_>,), (Vec<Verdict>,)>::new_unchecked(func) };
        let (verdicts,) = filter
            .call_async(&mut *store, (batch.as_wit(),))
            .await
            .map_err(|e| self.failure(e))?;
        if verdicts.len() != batch.len() {
            return Err(FilterError::WrongCount {
                got: verdicts.len(),
                expected: batch.len(),
            });
        }
        let output: usize = verdicts
            .iter()
            .map(|v| match v {
                Verdict::Replace(bytes) => bytes.len(),
                Verdict::Drop(reason) => reason.len(),
                Verdict::Keep => 0,
            })
            .sum();
        if output > self.caps.max_output_bytes {
            return Err(FilterError::TooMuchOutput {
                got: output,
                limit: self.caps.max_output_bytes,
            });
        }
        Ok(verdicts)
    }

    fn failure(&self, e: wasmtime::Error) -> FilterError {
        if e.downcast_ref::<PastDeadline>().is_some() {
            return self.timed_out();
        }
        // wasmtime's error for a spent hostcall fuel (`call_hostcall_bytes`)
        // is private: it is known by its words.
        if e.chain()
            .any(|cause| cause.to_string().contains("fuel allocated for hostcalls"))
        {
            return FilterError::TooMuchData {
                limit: self.caps.max_output_bytes.max(MIN_HOSTCALL_BYTES),
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => FilterError::OutOfFuel(self.caps.fuel.unwrap_or_default()),
            Some(trap) => FilterError::Trap(trap.to_string()),
            // e.g. "forcing trap when growing memory to 68026368 bytes"
            None => FilterError::Trap(e.root_cause().to_string()),
        }
    }
}

/// Runs a call, adding up the time spent inside its polls: the guest's CPU
/// time, as it yields every [`FUEL_SLICE`]. `None` when that passed
/// `budget`: the call is then dropped, which cancels it (its store is not
/// used again).
async fn cpu_capped<F: Future>(
    call: F,
    budget: Duration,
    deadline: &Deadline,
) -> Option<F::Output> {
    let mut call = std::pin::pin!(call);
    let mut used = Duration::ZERO;
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        let started = Instant::now();
        // What is left of the budget, for the host calls of this poll.
        deadline.set(budget.saturating_sub(used));
        let polled = call.as_mut().poll(cx);
        used += started.elapsed();
        match polled {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if used >= budget => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture wizer cannot snapshot (it changes a table in `init`),
    /// and caps for it.
    fn no_snapshot() -> (Vec<u8>, Caps) {
        let wasm = wat::parse_str(include_str!(
            "../../../../../tests/fixtures/no-snapshot.wat"
        ))
        .expect("the fixture is valid WAT");
        let caps = Caps {
            memory_bytes: 16 << 20,
            timeout: Duration::from_secs(5),
            max_output_bytes: 1 << 20,
            fuel: None,
        };
        (wasm, caps)
    }

    /// A component wasmtime-wizer cannot snapshot still loads, and gets
    /// `init` in every call: each fresh instance is initialised (the
    /// fixture drops every event of an instance whose `init` did not run).
    #[test]
    fn a_component_that_cannot_be_snapshot_gets_init_in_every_call() {
        let (wasm, caps) = no_snapshot();
        let compiled = FilterEngine::new()
            .compile(&wasm, "", caps)
            .expect("the fixture loads");
        assert!(!compiled.initialised, "wizer refuses a table mutation");
        let mut batch = BatchInput::with_capacity("acme", "PERF", 0, 3);
        for _ in 0..3 {
            batch.push(1, "a", None, None, b"{}");
        }
        for _ in 0..2 {
            let verdicts = futures::executor::block_on(compiled.call(&batch))
                .outcome
                .expect("the call succeeds");
            assert_eq!(verdicts.len(), 3);
            assert!(
                verdicts.iter().all(|v| matches!(v, Verdict::Keep)),
                "{verdicts:?}"
            );
        }
    }

    /// A compiled filter comes from the cache the second time, and a
    /// damaged cache file is compiled again (never deserialized) and replaced.
    #[test]
    fn the_compile_cache_is_used_and_a_damaged_entry_is_compiled_again() {
        let (wasm, caps) = no_snapshot();
        let dir = tempfile::tempdir().unwrap();
        let engine = FilterEngine::new();
        engine.cache_in(dir.path().to_owned());
        let runtime = engine.runtime().unwrap();
        let path = engine.cached_path(&runtime, &wasm, "").unwrap();
        engine.compile(&wasm, "", caps).expect("compiles");
        let kept = std::fs::read(&path).expect("kept in the cache");
        assert!(FilterEngine::from_cache(&runtime, &path).is_some());
        // Another config is another entry.
        assert_ne!(
            engine.cached_path(&runtime, &wasm, "other"),
            Some(path.clone())
        );
        // One byte of the artifact changed: not used, compiled again, replaced.
        let mut damaged = kept.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        assert!(FilterEngine::from_cache(&runtime, &path).is_none());
        std::fs::write(&path, &damaged).unwrap();
        let compiled = engine.compile(&wasm, "", caps).expect("compiled again");
        let mut batch = BatchInput::with_capacity("acme", "PERF", 0, 1);
        batch.push(1, "a", None, None, b"{}");
        assert!(futures::executor::block_on(compiled.call(&batch))
            .outcome
            .is_ok());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            kept,
            "the entry is whole again"
        );
    }

    #[test]
    fn the_memory_cap_is_over_all_of_a_calls_memories() {
        let mut limits = CallLimits {
            memory_cap: 100,
            memory_used: 0,
        };
        assert!(
            limits.memory_growing(0, 60, None).unwrap(),
            "a first memory"
        );
        assert!(limits.memory_growing(0, 30, None).unwrap(), "a second one");
        assert!(limits.memory_growing(30, 40, None).unwrap(), "it grows");
        let err = limits.memory_growing(60, 61, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("forcing trap when growing memory to 61 bytes"),
            "{err}"
        );
        assert_eq!(limits.memory_used, 100);
    }
}
