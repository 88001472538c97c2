//! WASI 0.2 for guests whose toolchains import it (componentize-py,
//! ComponentizeJS): `wasmtime-wasi`'s implementation, with everything a
//! filter must not have denied.
//!
//! - No preopened directories, environment variables or arguments; stdin
//!   is closed. Sockets and name lookups are refused (no address passes
//!   the check, TCP, UDP and lookups are off).
//! - stdout and stderr become the call's log lines (`info` and `warn`),
//!   bounded like `log`: a call keeps the first [`MAX_STDIO_BYTES`] of
//!   each and drops the rest without failing the guest.
//! - Randomness is a generator seeded per call from the batch (its upload
//!   time and events), so a filter's output depends only on its input and
//!   config, and `weir filter test` repeats. (A filter must not use it for
//!   secrets.) The wall clock is frozen at the batch's upload time; the
//!   monotonic clock starts at 0 and moves only within the call.
//!
//! - `wasi:http` (which ComponentizeJS imports): its types work, and every
//!   outgoing request is refused (`HTTP request denied`).
//!
//! A call's WASI context is made on the guest's first WASI call: a filter
//! that imports none (every Rust filter) never pays for one.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::SeedableRng;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// Bytes of stdout, and of stderr, one call keeps.
pub const MAX_STDIO_BYTES: usize = 64 << 10;

/// What a call's WASI is made from.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallWorld {
    /// Seeds the call's randomness.
    pub seed: u64,
    /// The wall clock's one time: the batch's upload, ms since the epoch.
    pub wall_ms: i64,
}

/// One call's WASI state.
pub struct GuestWasi {
    pub ctx: WasiCtx,
    pub table: ResourceTable,
    pub http: wasmtime_wasi_http::WasiHttpCtx,
    pub deny_http: DenyHttp,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl GuestWasi {
    pub fn new(world: CallWorld) -> GuestWasi {
        let (stdout, stderr) = (Captured::default(), Captured::default());
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .secure_random(rand::rngs::StdRng::seed_from_u64(world.seed))
            .insecure_random(rand::rngs::StdRng::seed_from_u64(!world.seed))
            .insecure_random_seed(u128::from(world.seed))
            .wall_clock(FrozenWall(world.wall_ms))
            .monotonic_clock(CallClock(Instant::now()));
        GuestWasi {
            ctx: builder.build(),
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            deny_http: DenyHttp,
            stdout,
            stderr,
        }
    }
}

/// `wasi:http`'s outgoing requests: all refused.
pub struct DenyHttp;

impl wasmtime_wasi_http::WasiHttpHooks for DenyHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The wall clock: always the batch's upload time.
struct FrozenWall(i64);

impl HostWallClock for FrozenWall {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.max(0) as u64)
    }
}

/// The monotonic clock: nanoseconds since the call began.
struct CallClock(Instant);

impl HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A guest's stdout or stderr: the first [`MAX_STDIO_BYTES`] written,
/// the rest dropped (the guest is never told: a chatty filter still works).
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<BytesMut>>);

impl Captured {
    fn keep(&self, bytes: &[u8]) {
        let mut buffer = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_STDIO_BYTES.saturating_sub(buffer.len());
        buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// What was written, as lines (a last line without a newline too).
    pub fn lines(&self) -> Vec<String> {
        let buffer = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buffer)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_STDIO_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi_http::WasiHttpHooks;

    #[tokio::test]
    async fn outgoing_http_is_denied() {
        let request = http::Request::get("http://127.0.0.1:9/")
            .body(wasmtime_wasi_http::WasiBody::default())
            .unwrap();
        let answer =
            Box::into_pin(DenyHttp.send_request(request, None, Box::new(async { Ok(()) })));
        let error = answer.await.err().expect("denied");
        assert!(
            format!("{error:?}").contains("HttpRequestDenied"),
            "{error:?}"
        );
    }

    #[test]
    fn stdout_keeps_its_first_bytes_and_drops_the_rest_silently() {
        let mut out = Captured::default();
        for i in 0..10_000 {
            assert!(OutputStream::write(&mut out, Bytes::from(format!("line {i}\n"))).is_ok());
        }
        let lines = out.lines();
        assert_eq!(lines[0], "line 0");
        let kept: usize = lines.iter().map(|l| l.len() + 1).sum();
        // (+1: the cut last line is counted with a newline it did not keep.)
        assert!(
            kept <= MAX_STDIO_BYTES + 1 && kept > MAX_STDIO_BYTES - 16,
            "{kept}"
        );
    }
}
