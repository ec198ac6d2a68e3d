//! CA bundles that upstream certificates are verified against, in the form Pingora's
//! connector takes per peer.

use std::path::Path;
use std::sync::Arc;

use pingora::protocols::tls::CaType;
use pingora::utils::tls::{WrappedX509, parse_x509};

use super::certs::{CertificateError, read_certificates};

/// The certificates of one CA file; equal when the file's bytes are.
#[derive(Clone)]
pub struct CaBundle {
    pub certificates: Arc<CaType>,
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaBundle({} certificates)", self.certificates.len())
    }
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.sha256 == other.sha256
    }
}

pub fn load_ca_bundle(path: &Path) -> Result<CaBundle, CertificateError> {
    use sha2::Digest;
    let (bytes, chain) = read_certificates(path)?;
    let mut certificates = Vec::with_capacity(chain.len());
    for der in chain {
        let raw = der.as_ref().to_vec();
        // Pingora parses lazily and panics on garbage; parse here to fail politely.
        if let Err(e) = x509_parser::parse_x509_certificate(&raw) {
            return Err(CertificateError::BadCertificate {
                path: path.to_path_buf(),
                message: e.to_string(),
            });
        }
        certificates.push(WrappedX509::new(raw, parse_x509));
    }
    Ok(CaBundle {
        certificates: Arc::from(certificates.into_boxed_slice()),
        sha256: sha2::Sha256::digest(&bytes).into(),
    })
}
