//! TLS: certificate files -> rustls keys (`certs.rs`), SNI selection that follows
//! reloads without touching open connections (`sni.rs`), and the CA bundles that
//! verify upstreams (`ca.rs`). rustls with the `ring` provider, as Pingora's listener.

mod ca;
mod certs;
mod sni;

pub use ca::{CaBundle, load_ca_bundle};
pub use certs::{CertificateError, LoadedCertificate, load_certificate};
pub use sni::{CertificateStore, SniTable};

/// Installs the process-wide rustls crypto provider (ring) once; every TLS config
/// built afterwards, ours or Pingora's, uses it.
pub fn install_crypto_provider() {
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
}
