//! A certificate chain and its private key, read from PEM files and checked the way a
//! TLS handshake would use them: the key parses, is of a supported type, and belongs to
//! the first certificate. Every error names the file and what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("`{}` is not valid PEM: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("`{}`: the first certificate cannot be parsed: {message}", path.display())]
    BadCertificate { path: PathBuf, message: String },
    #[error("`{}` holds no PEM private key (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)", path.display())]
    NoKey { path: PathBuf },
    #[error("`{}`: unusable private key: {message}", path.display())]
    BadKey { path: PathBuf, message: String },
    #[error("`{}` is not the private key of the certificate in `{}`", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl CertificateError {
    /// The file the problem is in (for a mismatch: the key, which does not belong).
    pub fn file(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::NoCertificate { path }
            | Self::Pem { path, .. }
            | Self::BadCertificate { path, .. }
            | Self::NoKey { path }
            | Self::BadKey { path, .. } => path,
            Self::Mismatch { key, .. } => key,
        }
    }
}

/// A usable certificate with what the gateway needs to know about it.
#[derive(Clone)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// DNS names from subjectAltName (lowercase; `*.example.com` for wildcards), or
    /// the common name when there is no subjectAltName.
    pub names: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
    /// Of the certificate and key files together: tells a rotated pair apart.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for LoadedCertificate {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl PartialEq for LoadedCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.sha256 == other.sha256
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|source| CertificateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every certificate in a PEM file (at least one).
pub(super) fn read_certificates(
    path: &Path,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), CertificateError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok((bytes, chain))
}

pub fn load_certificate(cert: &Path, key: &Path) -> Result<LoadedCertificate, CertificateError> {
    let (cert_bytes, chain) = read_certificates(cert)?;
    let (names, not_after) =
        describe(&chain[0]).map_err(|message| CertificateError::BadCertificate {
            path: cert.to_path_buf(),
            message,
        })?;
    let key_bytes = read(key)?;
    let private = match PrivateKeyDer::from_pem_slice(&key_bytes) {
        Ok(private) => private,
        Err(pem::Error::NoItemsFound) => {
            return Err(CertificateError::NoKey {
                path: key.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(CertificateError::Pem {
                path: key.to_path_buf(),
                message: e.to_string(),
            });
        }
    };
    let signing = rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| {
        CertificateError::BadKey {
            path: key.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        return Err(CertificateError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        });
    }
    let mut hasher = Sha256::new();
    hasher.update(&cert_bytes);
    hasher.update(&key_bytes);
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        names,
        not_after,
        sha256: hasher.finalize().into(),
    })
}

/// The names a client may reach this certificate by, and when it expires.
fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("bad subjectAltName: {e}")),
    };
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    Ok((names, cert.validity().not_after.timestamp()))
}
