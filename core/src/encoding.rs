//! What a body is: its Content-Type and Content-Encoding checked (415 for
//! anything but JSON in a supported coding), and its decompression, capped.
//!
//! Decompression streams into a buffer that stops one byte past the
//! tenant's `max_decompressed_bytes`, so a bomb is refused without its full
//! output ever being allocated; a zstd frame's window is capped too.

use std::io::Read;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};

use crate::model::{ErrorCode, Reject};

/// The encodings a client may use for the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

/// Checks the headers that say what the body is: 415 for anything but JSON
/// in a supported encoding.
pub fn check_headers(headers: &HeaderMap) -> Result<Encoding, Reject> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedContentType,
            format!(
                "Content-Type: '{}' is not supported, send application/json",
                content_type.escape_debug()
            ),
        ));
    }
    // Every coding the client applied, in order, over all the header's
    // lines; `identity` is none.
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err(unsupported_encoding(&String::from_utf8_lossy(
                value.as_bytes(),
            )));
        };
        codings.extend(
            value
                .split(',')
                .map(|coding| coding.trim().to_ascii_lowercase())
                .filter(|coding| !coding.is_empty() && coding != "identity"),
        );
    }
    match codings.as_slice() {
        [] => Ok(Encoding::Identity),
        [one] => match one.as_str() {
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "zstd" => Ok(Encoding::Zstd),
            other => Err(unsupported_encoding(other)),
        },
        // Two codings stacked (e.g. gzip then zstd): one is supported.
        _ => Err(unsupported_encoding(&codings.join(", "))),
    }
}

fn unsupported_encoding(value: &str) -> Reject {
    Reject::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UnsupportedContentEncoding,
        format!(
            "Content-Encoding: '{}' is not supported, use one of gzip, zstd or identity",
            value.escape_debug()
        ),
    )
    .with_header("accept-encoding", "gzip, zstd, identity")
}

/// Decodes a gzip or zstd body, refusing output beyond `max` bytes.
pub fn decompress(raw: Bytes, encoding: Encoding, max: usize) -> Result<Bytes, Reject> {
    let name = match encoding {
        Encoding::Identity => return Ok(raw),
        Encoding::Gzip => "gzip",
        Encoding::Zstd => "zstd",
    };
    let window_log = zstd_window_log(max);
    let reader: Box<dyn Read> = match encoding {
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&raw[..])),
        _ => {
            let mut decoder =
                zstd::stream::read::Decoder::new(&raw[..]).map_err(|e| corrupt(name, e))?;
            decoder
                .window_log_max(window_log)
                .map_err(|e| corrupt(name, e))?;
            Box::new(decoder)
        }
    };
    let out = read_capped(reader, raw.len(), max).map_err(|e| {
        match e.to_string().contains("too much memory") {
            true => too_large(format!(
                "body: the zstd frame's window is larger than the {} bytes this node decodes",
                1u64 << window_log
            )),
            false => corrupt(name, e),
        }
    })?;
    if out.len() > max {
        return Err(too_large(format!(
            "body: decompresses to more than the limit of {max} bytes"
        )));
    }
    Ok(Bytes::from(out))
}

/// Reads `reader` to its end or to one byte past `max`, whichever comes
/// first. The buffer starts small (the output size is unknown and may be a
/// bomb) and doubles, but never past `max + 1` bytes: `read_to_end` would
/// double past it, holding up to twice the cap (three times while it
/// copies) for a body refused anyway. At most the cap and, for the moment
/// of its last growth, half of it again are held
/// (fuzz/fuzz_targets/body_decoding.rs counts).
fn read_capped(mut reader: impl Read, raw_len: usize, max: usize) -> std::io::Result<Vec<u8>> {
    let limit = max.saturating_add(1);
    let mut out = vec![0; raw_len.saturating_mul(4).clamp(1, limit)];
    let mut filled = 0;
    loop {
        if filled == out.len() {
            let more = out.len().min(limit - filled);
            if more == 0 {
                break;
            }
            out.reserve_exact(more);
            out.resize(filled + more, 0);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.truncate(filled);
    Ok(out)
}

/// The largest zstd window (log2 of bytes) decoded: the decoder allocates
/// the window a frame asks for (up to 128 MiB by zstd's default) whatever
/// the output cap, so a tiny frame could make every request allocate that.
/// No window needs to be larger than the whole output allowed; 8 MiB (what
/// zstd's levels up to 19 use) is always allowed.
fn zstd_window_log(max_output: usize) -> u32 {
    let needed = usize::BITS - max_output.saturating_sub(1).leading_zeros();
    needed.clamp(23, 27)
}

fn corrupt(name: &str, e: std::io::Error) -> Reject {
    Reject::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadEncoding,
        format!("body: not valid {name} data: {e}"),
    )
}

/// 413: the body, read or decompressed, is past its cap.
pub fn too_large(message: String) -> Reject {
    Reject::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BodyTooLarge,
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn only_json_in_known_encodings() {
        let ok = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert_eq!(check_headers(&ok).unwrap(), Encoding::Identity);
        let gz = headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ]);
        assert_eq!(check_headers(&gz).unwrap(), Encoding::Gzip);
        let r = check_headers(&headers(&[("content-type", "text/plain")])).unwrap_err();
        assert_eq!(
            (r.status.as_u16(), r.message.as_str()),
            (
                415,
                "Content-Type: 'text/plain' is not supported, send application/json"
            )
        );
        let r = check_headers(&headers(&[])).unwrap_err();
        assert_eq!(r.status.as_u16(), 415);
        let br = headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ]);
        let r = check_headers(&br).unwrap_err();
        assert_eq!(
            (r.status.as_u16(), r.message.as_str()),
            (
                415,
                "Content-Encoding: 'br' is not supported, use one of gzip, zstd or identity"
            )
        );
        // A list, over one line or several: `identity` is no coding, and
        // two codings stacked are one too many.
        let json = ("content-type", "application/json");
        let gz_identity = headers(&[json, ("content-encoding", "gzip, identity")]);
        assert_eq!(check_headers(&gz_identity).unwrap(), Encoding::Gzip);
        let mut two_lines = headers(&[json, ("content-encoding", "gzip")]);
        two_lines.append(CONTENT_ENCODING, "zstd".parse().unwrap());
        let r = check_headers(&two_lines).unwrap_err();
        assert_eq!(r.status.as_u16(), 415);
        assert!(r
            .message
            .starts_with("Content-Encoding: 'gzip, zstd' is not supported"));
        // Not ASCII: refused, not taken for identity.
        let mut odd = headers(&[json]);
        odd.insert(
            CONTENT_ENCODING,
            http::HeaderValue::from_bytes(b"gzip\xff").unwrap(),
        );
        assert_eq!(check_headers(&odd).unwrap_err().status.as_u16(), 415);
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn gzip_and_zstd_decode() {
        let data = b"{\"meta\":{}}".repeat(10);
        assert_eq!(
            &decompress(gzip(&data), Encoding::Gzip, 1000).unwrap()[..],
            &data[..]
        );
        let z = Bytes::from(zstd::encode_all(&data[..], 3).unwrap());
        assert_eq!(&decompress(z, Encoding::Zstd, 1000).unwrap()[..], &data[..]);
    }

    /// A frame asking for a window larger than the output cap needs is
    /// refused before the decoder allocates it; an ordinary frame decodes.
    #[test]
    fn a_zstd_window_beyond_the_cap_is_refused() {
        assert_eq!(zstd_window_log(10 * 1024 * 1024), 24);
        assert_eq!(zstd_window_log(1000), 23);
        assert_eq!(zstd_window_log(usize::MAX), 27);
        let data = b"{\"meta\":{}}".repeat(100);
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(27).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(&data).unwrap();
        let wide = Bytes::from(encoder.finish().unwrap());
        let r = decompress(wide.clone(), Encoding::Zstd, 1024 * 1024).unwrap_err();
        assert_eq!(
            (r.status.as_u16(), r.message.as_str()),
            (
                413,
                "body: the zstd frame's window is larger than the 8388608 bytes this node decodes"
            )
        );
        // A node allowing 128 MiB of output takes it.
        assert_eq!(
            &decompress(wide, Encoding::Zstd, 128 << 20).unwrap()[..],
            &data[..]
        );
    }

    /// The cap is exact, whatever the buffer's growth: its size passes,
    /// a byte more does not.
    #[test]
    fn the_cap_is_exact() {
        for size in [0, 1, 4095, 4096, 4097, 100_000] {
            let data = vec![b'x'; size];
            assert_eq!(
                decompress(gzip(&data), Encoding::Gzip, size).unwrap().len(),
                size
            );
            if size > 0 {
                let r = decompress(gzip(&data), Encoding::Gzip, size - 1).unwrap_err();
                assert_eq!(r.status.as_u16(), 413, "{size}");
            }
            let z = Bytes::from(zstd::encode_all(&data[..], 1).unwrap());
            assert_eq!(decompress(z, Encoding::Zstd, size).unwrap().len(), size);
        }
    }

    #[test]
    fn a_bomb_is_refused_at_the_cap() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let r = decompress(bomb, Encoding::Gzip, 1024 * 1024).unwrap_err();
        assert_eq!(
            (r.status.as_u16(), r.message.as_str()),
            (
                413,
                "body: decompresses to more than the limit of 1048576 bytes"
            )
        );
        let r = decompress(Bytes::from_static(b"not gzip"), Encoding::Gzip, 100).unwrap_err();
        assert_eq!(r.status.as_u16(), 400);
        assert!(
            r.message.starts_with("body: not valid gzip data"),
            "{}",
            r.message
        );
    }
}
