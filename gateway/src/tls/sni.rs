//! Picks the certificate for a handshake by SNI. The table is swapped whole on reload:
//! new handshakes see the new certificates, established connections keep the keys they
//! negotiated with.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedCertificate;

/// Certificates by name for one listener. The first certificate is the default: it
/// answers clients that send no SNI or a name no certificate covers.
#[derive(Debug)]
pub struct SniTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`: covers exactly one more label.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// Refuse clients that cannot speak TLS 1.3.
    tls13_only: bool,
}

impl SniTable {
    /// `certificates` must not be empty (the config guarantees it). Names claimed twice
    /// go to the first certificate that claims them.
    pub fn new(certificates: &[LoadedCertificate], tls13_only: bool) -> Option<Self> {
        let default = Arc::clone(&certificates.first()?.key);
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for certificate in certificates {
            for name in &certificate.names {
                let table = match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(name.clone()),
                };
                table.or_insert_with(|| Arc::clone(&certificate.key));
            }
        }
        Some(Self {
            exact,
            wildcard,
            default,
            tls13_only,
        })
    }

    pub fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return Arc::clone(&self.default);
        };
        let found = self.exact.get(&name).or_else(|| {
            name.split_once('.')
                .and_then(|(_, parent)| self.wildcard.get(parent))
        });
        Arc::clone(found.unwrap_or(&self.default))
    }
}

/// One per TLS listener, for the life of the process; reloads replace its table.
#[derive(Debug)]
pub struct CertificateStore {
    table: ArcSwap<SniTable>,
}

impl CertificateStore {
    pub fn new(table: SniTable) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
        }
    }

    pub fn replace(&self, table: SniTable) {
        self.table.store(Arc::new(table));
    }
}

/// TLS 1.3 cipher suites all start with 0x13; a client offering none cannot speak 1.3.
fn offers_tls13(hello: &ClientHello<'_>) -> bool {
    hello
        .cipher_suites()
        .iter()
        .any(|suite| u16::from(*suite) >> 8 == 0x13)
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        // Pingora's rustls listener always enables TLS 1.2 and 1.3; refusing to pick a
        // certificate is how a 1.2-only client is turned away (handshake_failure).
        if table.tls13_only && !offers_tls13(&hello) {
            return None;
        }
        Some(table.select(hello.server_name()))
    }
}
