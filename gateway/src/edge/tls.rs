//! TLS for the HTTPS listener: rustls with TLS 1.2 and 1.3 only, ALPN for
//! h2 and HTTP/1.1, the certificate chain and key from PEM files.
//!
//! With no files configured, a self-signed certificate for localhost is made
//! at start, so the one-command local node serves HTTPS too; it is logged
//! loudly, and never what a production node should run with.
//!
//! Certificates hot-reload: [`watch`] checks the files and swaps in a new
//! certificate when they change (a renewal needs no restart, and open
//! connections keep theirs). A file that does not load keeps the old one.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why the TLS listener could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_path {path}: {message}")]
    Cert { path: String, message: String },
    #[error("tls.key_path {path}: {message}")]
    Key { path: String, message: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls.client_ca_path {path}: {message}")]
    ClientCa { path: String, message: String },
    #[error("self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
}

/// The certificate the listener presents now; swapped by [`watch`].
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    /// The files `current` was made from (none when self-signed).
    files: std::sync::Mutex<Option<PairFiles>>,
    /// Changed files that did not load (the current certificate stayed).
    refused: std::sync::atomic::AtomicU64,
}

/// The certificate and key files' bytes.
type PairFiles = (Vec<u8>, Vec<u8>);

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The HTTPS listener's configuration.
pub struct Tls {
    pub config: Arc<ServerConfig>,
    /// Made up at start because no files were configured.
    pub self_signed: bool,
    pub cert: Arc<ReloadingCert>,
}

/// The rustls server configuration for `tls`.
pub fn server_config(tls: &TlsConfig) -> Result<Tls, TlsError> {
    let (chain, key, files) = match (&tls.cert_path, &tls.key_path) {
        (Some(cert), Some(key)) => {
            let files = read(cert, key)?;
            let (chain, key) = parse(cert, key, &files)?;
            (chain, key, Some(files))
        }
        _ => {
            let generated = rcgen::generate_simple_self_signed(vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ])?;
            let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
            (vec![generated.cert.der().clone()], key, None)
        }
    };
    let self_signed = files.is_none();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = Arc::new(ReloadingCert {
        current: ArcSwap::from_pointee(certified(&provider, chain, key)?),
        files: std::sync::Mutex::new(files),
        refused: Default::default(),
    });
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &tls.client_ca_path {
        // Client certificates are asked for and verified, but optional at the
        // TLS layer: which tenants need one is decided per request.
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca).map_err(|message| TlsError::ClientCa {
                path: ca.display().to_string(),
                message,
            })? {
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.display().to_string(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        self_signed,
        cert,
    })
}

/// Every PEM certificate in the file; at least one.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    certs_in(&std::fs::read(path).map_err(|e| e.to_string())?)
}

/// Every PEM certificate in `pem`; at least one.
fn certs_in(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

fn certified(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let key = provider.key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match()?;
    Ok(certified)
}

/// Checks the certificate and key files every `interval` and swaps in the
/// new pair when either changed. Runs until the task is dropped.
///
/// Changed means the bytes, not the files' times and sizes: a renewed
/// certificate is often the same length, and a pair rewritten in place
/// within the file system's clock tick keeps its time. The files are a few
/// KiB, read once per interval, and parsed from the bytes compared, so no
/// write between the two is missed.
pub async fn watch(cert: Arc<ReloadingCert>, tls: TlsConfig) {
    let (Some(cert_path), Some(key_path)) = (tls.cert_path, tls.key_path) else {
        return;
    };
    let provider = rustls::crypto::ring::default_provider();
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(tls.reload_interval_ms));
    // What was refused last, so that a bad pair is reported once, not every tick.
    let mut refused: Option<Result<PairFiles, String>> = None;
    loop {
        ticks.tick().await;
        let files = read(&cert_path, &key_path);
        if let Ok(files) = &files {
            if cert
                .files
                .lock()
                .ok()
                .is_some_and(|f| f.as_ref() == Some(files))
            {
                continue;
            }
        }
        let attempt = files.as_ref().map_err(|e| e.to_string()).cloned();
        if refused.as_ref() == Some(&attempt) {
            continue;
        }
        // A pair written one file at a time may not match yet: the next
        // change is tried again.
        let loaded = files.and_then(|files| {
            let (chain, key) = parse(&cert_path, &key_path, &files)?;
            Ok((certified(&provider, chain, key)?, files))
        });
        match loaded {
            Ok((new, files)) => {
                cert.current.store(Arc::new(new));
                if let Ok(mut current) = cert.files.lock() {
                    *current = Some(files);
                }
                refused = None;
                tracing::info!(cert = %cert_path.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                cert.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                refused = Some(attempt);
                tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the current certificate")
            }
        }
    }
}

fn read(cert: &Path, key: &Path) -> Result<PairFiles, TlsError> {
    let cert_bytes = std::fs::read(cert).map_err(|e| TlsError::Cert {
        path: cert.display().to_string(),
        message: e.to_string(),
    })?;
    let key_bytes = std::fs::read(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    Ok((cert_bytes, key_bytes))
}

fn parse(
    cert: &Path,
    key: &Path,
    files: &PairFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certs_in(&files.0).map_err(|message| TlsError::Cert {
        path: cert.display().to_string(),
        message,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&files.1).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::eventually;
    use std::path::PathBuf;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key, generated.cert.der().to_vec())
    }

    fn current(tls: &Tls) -> Vec<u8> {
        tls.cert.current.load().cert[0].to_vec()
    }

    #[test]
    fn loads_pem_files_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = write_pair(dir.path(), "a");
        let config = TlsConfig {
            cert_path: Some(cert.clone()),
            key_path: Some(key),
            ..TlsConfig::default()
        };
        let tls = server_config(&config).unwrap();
        assert!(!tls.self_signed);
        assert_eq!(current(&tls), der);
        assert_eq!(
            tls.config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );

        std::fs::write(&cert, "not a certificate").unwrap();
        let err = server_config(&config).err().unwrap().to_string();
        assert!(err.starts_with("tls.cert_path"), "{err}");
        assert!(server_config(&TlsConfig::default()).unwrap().self_signed);
    }

    #[tokio::test]
    async fn a_new_certificate_on_disk_is_swapped_in_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, first) = write_pair(dir.path(), "live");
        let config = TlsConfig {
            cert_path: Some(cert.clone()),
            key_path: Some(key.clone()),
            reload_interval_ms: 20,
            client_ca_path: None,
        };
        let tls = server_config(&config).unwrap();
        let watcher = tokio::spawn(watch(tls.cert.clone(), config));

        // A certificate whose key does not match is refused: the old one stays.
        let (other_cert, _, _) = write_pair(dir.path(), "other");
        std::fs::copy(&other_cert, &cert).unwrap();
        let refused = || tls.cert.refused.load(std::sync::atomic::Ordering::Relaxed);
        let within = std::time::Duration::from_secs(5);
        eventually(within, "the mismatched pair to be seen", || refused() > 0).await;
        assert_eq!(current(&tls), first);

        let (new_cert, new_key, second) = write_pair(dir.path(), "new");
        std::fs::copy(&new_key, &key).unwrap();
        std::fs::copy(&new_cert, &cert).unwrap();
        eventually(within, "the new pair to be served", || {
            current(&tls) == second
        })
        .await;
        assert_eq!(current(&tls), second);
        watcher.abort();
    }
}
