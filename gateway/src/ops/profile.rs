//! `GET /debug/pprof/profile?seconds=N` on the admin listener: a CPU profile
//! of the running node, sampled at 99 Hz for N seconds (default 10, at most
//! 120), as gzipped pprof protobuf (`go tool pprof`, Pyroscope, Parca,
//! speedscope) or, with `format=flamegraph`, an SVG flame graph.
//!
//! One profile at a time: sampling is process-wide (SIGPROF), so a second
//! request while one runs gets 409.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::model::{ErrorCode, Reject};
use crate::respond::{self, Body};

/// Samples per second: not a multiple of common timer rates, as Go's default.
const FREQUENCY: i32 = 99;
const DEFAULT_SECONDS: u64 = 10;
const MAX_SECONDS: u64 = 120;

static RUNNING: AtomicBool = AtomicBool::new(false);

/// What the query asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub seconds: u64,
    pub flamegraph: bool,
}

/// Reads `seconds` and `format` from the query string.
pub fn parse(query: Option<&str>) -> Result<Request, Reject> {
    let mut request = Request {
        seconds: DEFAULT_SECONDS,
        flamegraph: false,
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "seconds" => {
                request.seconds = value
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_SECONDS).contains(s))
                    .ok_or_else(|| {
                        bad(format!(
                            "seconds: '{value}' is not a whole number from 1 to {MAX_SECONDS}"
                        ))
                    })?
            }
            "format" => {
                request.flamegraph = match value {
                    "flamegraph" | "svg" => true,
                    "pprof" | "proto" => false,
                    _ => return Err(bad(format!("format: '{value}' is not pprof or flamegraph"))),
                }
            }
            _ => {}
        }
    }
    Ok(request)
}

fn bad(message: String) -> Reject {
    Reject::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, message)
}

/// Clears [`RUNNING`] when dropped.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Samples the process for the requested time, off the async workers.
pub async fn profile(query: Option<&str>, request_id: &str) -> Response<Body> {
    let request = match parse(query) {
        Ok(request) => request,
        Err(reject) => return respond::reject(&reject, request_id),
    };
    if RUNNING.swap(true, Ordering::AcqRel) {
        let reject = Reject::new(
            StatusCode::CONFLICT,
            ErrorCode::ProfileRunning,
            "another CPU profile is being taken; try again when it ends",
        );
        return respond::reject(&reject, request_id);
    }
    // Cleared when the profile ends, also when its client has gone by then
    // (and this future was dropped): never left set.
    let running = Running;
    let taken = tokio::task::spawn_blocking(move || {
        let _running = running;
        take(&request)
    })
    .await;
    match taken {
        Ok(Ok((body, content_type))) => {
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            );
            response
        }
        Ok(Err(message)) => failed(message, request_id),
        Err(e) => failed(e.to_string(), request_id),
    }
}

fn failed(message: String, request_id: &str) -> Response<Body> {
    let reject = Reject::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::ProfileFailed,
        format!("the profile could not be taken: {message}"),
    );
    respond::reject(&reject, request_id)
}

/// Runs the sampler for `request.seconds` and encodes the report.
fn take(request: &Request) -> Result<(Bytes, &'static str), String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        // Unwinding inside these while a signal lands can deadlock.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(request.seconds));
    let report = guard.report().build().map_err(|e| e.to_string())?;
    if request.flamegraph {
        let mut svg = Vec::new();
        report.flamegraph(&mut svg).map_err(|e| e.to_string())?;
        return Ok((svg.into(), "image/svg+xml"));
    }
    let profile = report.pprof().map_err(|e| e.to_string())?;
    let mut encoded = Vec::new();
    pprof::protos::Message::encode(&profile, &mut encoded).map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&encoded).map_err(|e| e.to_string())?;
    let gz = gz.finish().map_err(|e| e.to_string())?;
    Ok((gz.into(), "application/octet-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_seconds_and_format() {
        assert_eq!(
            parse(None).unwrap(),
            Request {
                seconds: 10,
                flamegraph: false
            }
        );
        assert_eq!(
            parse(Some("seconds=3&format=flamegraph")).unwrap(),
            Request {
                seconds: 3,
                flamegraph: true
            }
        );
        assert_eq!(
            parse(Some("seconds=0")).unwrap_err().message,
            "seconds: '0' is not a whole number from 1 to 120"
        );
        assert_eq!(
            parse(Some("format=png")).unwrap_err().message,
            "format: 'png' is not pprof or flamegraph"
        );
    }
}
