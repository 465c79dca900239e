//! HTTPS for the Kinesis API (`--tls-listen`): rustls with the certificate and key of
//! `--tls-cert` / `--tls-key`, re-read when they change (a certificate renewed by
//! cert-manager is served without a restart; files that do not read keep the one in use).
//! ALPN offers HTTP/2 and HTTP/1.1, as the SDKs ask (the Java SDK's event streams use HTTP/2).

use prometheus::{IntCounter, Registry};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// The certificate served, and the files it came from.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    /// What the files held when last read, to notice a change.
    read: RwLock<(Vec<u8>, Vec<u8>)>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Certificates served since the start (1, then one more per reload).
    loads: IntCounter,
}

impl CertFiles {
    /// Reads the certificate and key; ones that do not read stop the start.
    pub fn load(cert: &Path, key: &Path, registry: &Registry) -> std::io::Result<CertFiles> {
        let (cert_pem, key_pem) = (std::fs::read(cert)?, std::fs::read(key)?);
        let certified = certified_key(&cert_pem, &key_pem).map_err(|e| invalid(cert, key, &e))?;
        let loads = IntCounter::new(
            "streamfabric_tls_certificate_loads_total",
            "HTTPS certificates loaded (the first and each reload).",
        )
        .expect("valid metric");
        registry.register(Box::new(loads.clone())).expect("metric registered once");
        loads.inc();
        Ok(CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            read: RwLock::new((cert_pem, key_pem)),
            current: RwLock::new(Arc::new(certified)),
            loads,
        })
    }

    /// Serve the files' certificate if they changed and read.
    pub fn reload_if_changed(&self) {
        let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read(&self.cert), std::fs::read(&self.key)) else {
            return tracing::error!(cert = %self.cert.display(), "TLS files not readable; the certificate in use stays");
        };
        if *self.read.read().unwrap() == (cert_pem.clone(), key_pem.clone()) {
            return;
        }
        match certified_key(&cert_pem, &key_pem) {
            Ok(certified) => {
                self.loads.inc();
                *self.current.write().unwrap() = Arc::new(certified);
                *self.read.write().unwrap() = (cert_pem, key_pem);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            // A renewal may write the certificate and the key one after the other: the next
            // look sees both.
            Err(e) => tracing::warn!(cert = %self.cert.display(), "TLS certificate not reloaded (yet): {e}"),
        }
    }

    /// The TLS acceptor of the API's HTTPS port.
    pub fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap().clone())
    }
}

fn invalid(cert: &Path, key: &Path, e: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} / {}: {e}", cert.display(), key.display()))
}

/// A chain and its key, checked to belong together.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the certificate file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the key is not a PEM private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| format!("{e}"))?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_key_of_another_certificate_or_no_pem_is_refused() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        assert!(certified_key(cert.as_bytes(), other_key.as_bytes()).is_err());
        assert!(certified_key(b"nothing", other_key.as_bytes()).unwrap_err().contains("no certificate"));
    }
}
