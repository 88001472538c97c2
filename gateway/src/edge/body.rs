//! Read the body: size capped before and after decompression
//! ([`weir_core::encoding`] checks the headers and decompresses), and a body
//! not received within `body_timeout_ms` gets 408. That is a deadline for
//! the whole body, not for a gap between reads: a request holds an admission
//! slot while its body comes in, and a client trickling a byte now and then
//! would otherwise hold it for ever.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};

use weir_core::encoding::too_large;
pub use weir_core::encoding::{check_headers, decompress, Encoding};

use crate::config::Limits;
use crate::model::{ErrorCode, Reject};

/// Reads the whole body within the limits and the deadline, then decodes it.
pub async fn read<B>(
    body: B,
    headers: &HeaderMap,
    encoding: Encoding,
    limits: &Limits,
    timeout: Duration,
) -> Result<Bytes, Reject>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let max = limits.max_body_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|&n| n > max as u64) {
        return Err(too_large(format!(
            "body: {length} bytes, the limit is {max}"
        )));
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_| {
            Reject::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::BodyTimeout,
                format!("body: not received within {} ms", timeout.as_millis()),
            )
        })?;
    let raw = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(too_large(format!(
                "body: larger than the limit of {max} bytes"
            )))
        }
        Err(e) => {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BodyReadFailed,
                format!("body: could not be read: {e}"),
            ))
        }
    };
    decompress(raw, encoding, limits.max_decompressed_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn the_body_limit_applies_before_and_while_reading() {
        let limits = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789abc"));
        let r = read(
            body.clone(),
            &headers(&[("content-length", "13")]),
            Encoding::Identity,
            &limits,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (r.status.as_u16(), r.message.as_str()),
            (413, "body: 13 bytes, the limit is 10")
        );
        let r = read(
            body,
            &headers(&[]),
            Encoding::Identity,
            &limits,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (r.status.as_u16(), r.message.as_str()),
            (413, "body: larger than the limit of 10 bytes")
        );
    }
}
