//! The `weir` command: serve, check a config, tail a topic, hash a key,
//! test a filter. It parses arguments; the library does the work
//! (`weir::node::serve` runs a node).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

use weir::config::Config;
use weir::edge::auth::Tenants;
use weir::pipeline::filter::host::{Caps, FilterEngine};
use weir::pipeline::kafka::tail;

// The request path allocates many small short-lived buffers; mimalloc keeps
// that off glibc's locks (about 15% of a core under load with glibc malloc).
// With the `override` feature (Cargo.toml) it also serves C's malloc, so
// librdkafka's per-record allocations (the message, each header) use it:
// measured 327 → 294 µs of node CPU per 50-event request (perf, no telemetry).
//
// mimalloc 2 (the `v2` feature), not 3: at 64 connections with 27 KB bodies
// 3 kept 58–78 MB resident against 45–46 MB for 2 (twelve runs), with the
// same instructions per request (callgrind: 1,694k vs 1,693k; it is how
// freed pages are kept, not work done). `BASE_BIN=<3's build> ROUNDS=5
// benches/compare.sh connections`: peak RSS 45.6 vs 60.9 MB at 64
// connections, 107.7 vs 121.2 MB at 1,000; events/s 0.98 of 3's at 64, 0.93
// at 1,000. 3's purge delay does not get there: at 10 ms 42–44 MB for −14%
// events/s, at 50 ms 45–50 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for the node. mimalloc asks for them
/// on its arenas (`madvise`), and then a 2 MiB page is resident as soon as
/// one byte of it is touched: at 64 connections 32 of the node's 66 MB of
/// anonymous memory were huge pages. Measured with 27 KB bodies, same run:
/// peak RSS 87–104 → 61–64 MB at 64 connections, 254–267 → 209–217 MB at
/// 1,000; node CPU per event +5% (4.26–4.50 → 4.63–4.68 µs: fewer TLB
/// hits). Memory is what a node's limit is set by. Applies to every
/// mapping from here on.
fn no_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and
    // touches no memory of ours; on a kernel without it, it fails, harmlessly.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: an edge gateway for event ingestion into Kafka"
)]
struct Cli {
    /// The TOML configuration file (before the command: `weir --config weir.toml serve`).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node. With no brokers configured, an embedded in-memory broker is used.
    Serve,
    /// Check a configuration file (and the environment) without serving.
    CheckConfig,
    /// Print the records of a topic as JSON lines, with key, partition, offset and headers.
    Tail {
        /// The topic, e.g. events.PERF_CRASH.
        #[arg(long)]
        topic: String,
        /// Bootstrap servers; default: kafka.brokers of the config.
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, value_enum, default_value = "beginning")]
        from: tail::From,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<u64>,
        /// Stop when no record arrives for this many milliseconds.
        #[arg(long)]
        idle_ms: Option<u64>,
    },
    /// Print the SHA-256 of an API key (for `keys_sha256`); reads stdin without an argument.
    HashKey { key: Option<String> },
    /// Work with Wasm filters.
    #[command(subcommand)]
    Filter(FilterCommand),
}

#[derive(Subcommand)]
enum FilterCommand {
    /// Run a filter over sample events with a node's caps and print each verdict.
    Test {
        /// The filter component (.wasm).
        filter: PathBuf,
        /// A JSON file: an array of events, or a batch with meta and data,
        /// read as a node reads an upload (events it would refuse are
        /// reported, not filtered).
        #[arg(long)]
        events: PathBuf,
        /// The config string handed to the filter's init.
        #[arg(long, default_value = "")]
        config: String,
        #[arg(long, default_value_t = 64)]
        memory_mb: usize,
        #[arg(long, default_value_t = 100)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_output_bytes: usize,
        /// Wasm fuel of the call (exact CPU cap); none by default.
        #[arg(long)]
        fuel: Option<u64>,
        /// An event or a replacement larger than this is refused, as on a
        /// node (its `max_event_bytes`).
        #[arg(long, default_value_t = weir::config::Limits::default().max_event_bytes)]
        max_event_bytes: usize,
        /// Bodies nested deeper than this are refused, as on a node (its
        /// `max_depth`, at most 128).
        #[arg(long, default_value_t = weir::config::Limits::default().max_depth)]
        max_depth: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => {
            no_huge_pages();
            let config = Config::load(cli.config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // Sockets every 4 polls, other threads' wake-ups (Kafka's
                // acknowledgements) every 8, instead of 61 and 31: a busy
                // Python or JavaScript filter makes each poll a fuel slice
                // (a quarter of a millisecond), and at the defaults every
                // other tenant's request waited up to 61 of them to be
                // seen. (benches/neighbours.sh: a quiet tenant's p50 beside
                // a saturating Python one, 20-26 ms at the defaults, 10-13
                // ms with these.)
                .event_interval(4)
                .global_queue_interval(8)
                .build()?;
            let served = runtime.block_on(weir::node::serve(config, cli.config));
            // Records are flushed by now; a CPU profile still sampling (a
            // blocking task) does not hold up the exit.
            runtime.shutdown_timeout(Duration::from_secs(1));
            Ok(served?)
        }
        Command::CheckConfig => {
            let config = Config::load(cli.config.as_deref())?;
            // Filters are compiled and their init run, as a node would at start.
            let engine = FilterEngine::new();
            if let Some(dir) = &config.filters.cache_path {
                engine.cache_in(dir.clone());
            }
            Tenants::from_config(&config, None, Some(&engine), None, None)
                .map_err(anyhow::Error::msg)?;
            println!(
                "config OK: {} tenant(s), kafka {}",
                config.tenants.len(),
                if config.kafka.brokers.is_empty() {
                    "embedded (not durable)"
                } else {
                    &config.kafka.brokers
                }
            );
            Ok(())
        }
        Command::Tail {
            topic,
            brokers,
            from,
            max,
            idle_ms,
        } => {
            let brokers = match brokers {
                Some(b) => b,
                None => Config::load(cli.config.as_deref())?.kafka.brokers,
            };
            if brokers.is_empty() {
                bail!("no brokers: pass --brokers (a node on the embedded broker logs its address at start)");
            }
            let options = tail::TailOptions {
                brokers,
                topic,
                from,
                max,
                idle: idle_ms.map(Duration::from_millis),
            };
            tail::tail(&options, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Command::Filter(FilterCommand::Test {
            filter,
            events,
            config,
            memory_mb,
            timeout_ms,
            max_output_bytes,
            fuel,
            max_event_bytes,
            max_depth,
        }) => {
            if max_depth == 0 || max_depth > 128 {
                anyhow::bail!("--max-depth: must be from 1 to 128, as a node's max_depth");
            }
            let events = std::fs::read_to_string(&events)
                .with_context(|| format!("reading {}", events.display()))?;
            let caps = Caps {
                memory_bytes: memory_mb * 1024 * 1024,
                timeout: Duration::from_millis(timeout_ms),
                max_output_bytes,
                fuel,
            };
            let limits = weir::config::Limits {
                max_event_bytes,
                max_depth,
                ..Default::default()
            };
            let report =
                weir::pipeline::filter::local::run(&filter, &config, &events, caps, &limits)
                    .map_err(anyhow::Error::msg)?;
            print!("{report}");
            Ok(())
        }
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s.trim_end_matches(['\n', '\r']).to_owned()
                }
            };
            println!("{}", hex::encode(Sha256::digest(key.as_bytes())));
            Ok(())
        }
    }
}
