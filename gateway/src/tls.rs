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
}

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
    let (chain, key, self_signed) = match (&tls.cert_path, &tls.key_path) {
        (Some(cert), Some(key)) => {
            let (chain, key) = load(cert, key)?;
            (chain, key, false)
        }
        _ => {
            let generated = rcgen::generate_simple_self_signed(vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ])?;
            let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
            (vec![generated.cert.der().clone()], key, true)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = Arc::new(ReloadingCert {
        current: ArcSwap::from_pointee(certified(&provider, chain, key)?),
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
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
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
pub async fn watch(cert: Arc<ReloadingCert>, tls: TlsConfig) {
    let (Some(cert_path), Some(key_path)) = (tls.cert_path, tls.key_path) else {
        return;
    };
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .ok()
    };
    let mut seen = (stamp(&cert_path), stamp(&key_path));
    let provider = rustls::crypto::ring::default_provider();
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(tls.reload_interval_ms));
    loop {
        ticks.tick().await;
        let now = (stamp(&cert_path), stamp(&key_path));
        if now == seen {
            continue;
        }
        // A pair written one file at a time may not match yet: keep `seen`
        // unchanged on failure so the next tick tries again.
        match load(&cert_path, &key_path).and_then(|(chain, key)| certified(&provider, chain, key))
        {
            Ok(new) => {
                cert.current.store(Arc::new(new));
                seen = now;
                tracing::info!(cert = %cert_path.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the current certificate")
            }
        }
    }
}

fn load(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_error = |message: String| TlsError::Cert {
        path: cert.display().to_string(),
        message,
    };
    let chain = load_certs(cert).map_err(cert_error)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(current(&tls), first);

        let (new_cert, new_key, second) = write_pair(dir.path(), "new");
        std::fs::copy(&new_key, &key).unwrap();
        std::fs::copy(&new_cert, &cert).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while current(&tls) != second && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(current(&tls), second);
        watcher.abort();
    }
}
