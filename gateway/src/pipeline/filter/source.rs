//! Where a filter's component comes from: a file (`path`), or a URL with
//! its SHA-256 (`url` + `sha256`), in the manner of Envoy's remote data
//! sources. A Python or JavaScript component weighs tens of megabytes: it
//! cannot travel in a ConfigMap, so nodes fetch it.
//!
//! A remote component is fetched off the request path (at start, at a
//! reload, by the filter watcher), checked against its `sha256` before
//! anything else reads it, and kept on disk by its hash
//! (`<filters.cache_path>/sources/<sha256>.wasm`, or the system's temporary
//! directory): a restart uses the kept file without fetching, and a new
//! hash in the config fetches again. A wrong hash or an unreachable URL
//! never replaces the version in use (see `Tenants::from_config`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::FilterConfig;

/// The most bytes a component may have.
const MAX_COMPONENT_BYTES: usize = 256 << 20;
/// Connecting, and each read, may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects followed (a release page's download usually redirects once).
const MAX_REDIRECTS: usize = 5;

/// Why a remote component could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url} has SHA-256 {got}, not the configured {expected}: not used")]
    WrongHash {
        url: String,
        expected: String,
        got: String,
    },
    #[error("keeping {path}: {message}")]
    Keep { path: String, message: String },
}

/// The local file of a filter's component: its `path`, or the kept copy of
/// its `url` (fetched and checked first when there is none yet).
pub fn local_file(settings: &FilterConfig, cache: Option<&Path>) -> Result<PathBuf, SourceError> {
    let (Some(url), Some(sha256)) = (&settings.url, &settings.sha256) else {
        return Ok(settings.path.clone());
    };
    if let Some(kept) = kept_file(settings, cache) {
        return Ok(kept);
    }
    let file = kept_path(sha256, cache);
    let dir = file.parent().unwrap_or(Path::new("."));
    let bytes = fetch(url)?;
    let got = hex::encode(Sha256::digest(&bytes));
    if got != sha256.to_ascii_lowercase() {
        return Err(SourceError::WrongHash {
            url: url.clone(),
            expected: sha256.clone(),
            got,
        });
    }
    let keep = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let partial = file.with_extension("partial");
        std::fs::write(&partial, &bytes)?;
        std::fs::rename(&partial, &file)
    };
    keep().map_err(|e| SourceError::Keep {
        path: file.display().to_string(),
        message: e.to_string(),
    })?;
    tracing::info!(url, sha256, file = %file.display(), bytes = bytes.len(), "filter component fetched and checked");
    Ok(file)
}

/// The local file of a filter's component when it is there without a
/// fetch: its `path`, or a kept copy of its `url` whose hash is right.
pub fn kept_file(settings: &FilterConfig, cache: Option<&Path>) -> Option<PathBuf> {
    let Some(sha256) = settings.url.as_ref().and(settings.sha256.as_ref()) else {
        return Some(settings.path.clone());
    };
    let file = kept_path(sha256, cache);
    std::fs::read(&file)
        .is_ok_and(|bytes| hex::encode(Sha256::digest(&bytes)) == sha256.to_ascii_lowercase())
        .then_some(file)
}

/// Where the component of hash `sha256` is kept.
fn kept_path(sha256: &str, cache: Option<&Path>) -> PathBuf {
    let dir = cache.map_or_else(
        || std::env::temp_dir().join("weir-sources"),
        |c| c.join("sources"),
    );
    dir.join(format!("{}.wasm", sha256.to_ascii_lowercase()))
}

/// The component at `url` (http or https), following redirects.
fn fetch(url: &str) -> Result<Vec<u8>, SourceError> {
    let failed = |message: String| SourceError::Fetch {
        url: url.to_owned(),
        message,
    };
    let mut current = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        match get(&current).map_err(|e| failed(e.to_string()))? {
            Answer::Body(bytes) => return Ok(bytes),
            Answer::Redirect(location) => current = location,
        }
    }
    Err(failed(format!("more than {MAX_REDIRECTS} redirects")))
}

enum Answer {
    Body(Vec<u8>),
    Redirect(String),
}

/// One `GET`, over a blocking connection (this runs off the request path,
/// on a thread that may block).
fn get(url: &str) -> std::io::Result<Answer> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| invalid(format!("not a URL: {e}")))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(invalid("only http:// and https:// URLs".into())),
    };
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host".into()))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let address = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("{host} has no address")))?;
    let tcp = TcpStream::connect_timeout(&address, FETCH_TIMEOUT)?;
    tcp.set_read_timeout(Some(FETCH_TIMEOUT))?;
    tcp.set_write_timeout(Some(FETCH_TIMEOUT))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: weir/{}\r\nAccept: application/wasm, */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let stream: Box<dyn ReadWrite> = if https {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        // The node's provider (ring), as its listeners use, without
        // installing a process-wide default.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| invalid(format!("{host}: {e}")))?;
        let connection = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| invalid(e.to_string()))?;
        Box::new(rustls::StreamOwned::new(connection, tcp))
    } else {
        Box::new(tcp)
    };
    let mut reader = BufReader::new(stream);
    reader.get_mut().write_all(request.as_bytes())?;
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid(format!("not an HTTP answer: {}", status.trim())))?;
    let (mut length, mut chunked, mut location) = (None, false, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "location" => location = Some(value.to_owned()),
                _ => {}
            }
        }
    }
    if (300..400).contains(&code) {
        let location = location.ok_or_else(|| invalid(format!("{code} without a Location")))?;
        // A relative location is on the same host.
        let next = match location.starts_with('/') {
            true => format!(
                "{}://{}{location}",
                if https { "https" } else { "http" },
                uri.authority().map_or(host.as_str(), |a| a.as_str())
            ),
            false => location,
        };
        return Ok(Answer::Redirect(next));
    }
    if code != 200 {
        return Err(invalid(format!("answered {}", status.trim())));
    }
    if length.is_some_and(|n| n > MAX_COMPONENT_BYTES) {
        return Err(invalid(format!("more than {MAX_COMPONENT_BYTES} bytes")));
    }
    let body = match chunked {
        true => read_chunked(&mut reader)?,
        false => {
            let mut body = Vec::with_capacity(length.unwrap_or(0));
            reader
                .take(MAX_COMPONENT_BYTES as u64 + 1)
                .read_to_end(&mut body)?;
            body
        }
    };
    if body.len() > MAX_COMPONENT_BYTES {
        return Err(invalid(format!("more than {MAX_COMPONENT_BYTES} bytes")));
    }
    if length.is_some_and(|n| n != body.len()) {
        return Err(invalid(format!(
            "cut short: {} of {:?} bytes",
            body.len(),
            length
        )));
    }
    Ok(Answer::Body(body))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A chunked body (RFC 9112 §7.1), up to [`MAX_COMPONENT_BYTES`].
fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| invalid("a bad chunk size"))?;
        if size == 0 {
            return Ok(body);
        }
        if body.len() + size > MAX_COMPONENT_BYTES {
            return Err(invalid("too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_is_put_together() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        assert_eq!(read_chunked(&mut &wire[..]).unwrap(), b"hello world");
        assert!(read_chunked(&mut &b"zz\r\n"[..]).is_err());
    }
}
