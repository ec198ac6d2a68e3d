//! TLS for tests: certificates made on the spot (rcgen), clients that report which
//! certificate the gateway served, and origins that speak TLS or HTTP/2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority that signs test certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, as PEM and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Self { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A certificate for `names` (DNS names, `*.x` wildcards allowed).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Accepts any server certificate: these tests check which certificate was served,
/// not whether a client would trust it (`trusting` does that).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a test client connects.
pub struct Client {
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    alpn: Vec<Vec<u8>>,
    roots: Option<CertificateDer<'static>>,
}

impl Client {
    /// TLS 1.2 and 1.3, no ALPN, any certificate accepted.
    pub fn new() -> Self {
        Self {
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: Vec::new(),
            roots: None,
        }
    }

    pub fn only_tls12(mut self) -> Self {
        self.versions = vec![&rustls::version::TLS12];
        self
    }

    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// Verify the server's certificate against `ca`, as a real client would.
    pub fn trusting(mut self, ca: &Ca) -> Self {
        self.roots = Some(ca.der());
        self
    }

    fn config(&self) -> ClientConfig {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&self.versions)
            .expect("protocol versions");
        let mut config = match &self.roots {
            Some(root) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(root.clone()).expect("root");
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
                .with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        config
    }

    /// Connects with `sni` (None: no SNI, as a client connecting by IP).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        sni: Option<&str>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        self.connect_after(addr, sni, b"").await
    }

    /// Like `connect`, sending `preamble` (a PROXY protocol header, say) before the
    /// handshake.
    pub async fn connect_after(
        &self,
        addr: SocketAddr,
        sni: Option<&str>,
        preamble: &[u8],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut tcp = TcpStream::connect(addr).await?;
        tokio::io::AsyncWriteExt::write_all(&mut tcp, preamble).await?;
        let name = match sni {
            Some(name) => ServerName::try_from(name.to_string())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            None => ServerName::IpAddress(addr.ip().into()),
        };
        TlsConnector::from(Arc::new(self.config()))
            .connect(name, tcp)
            .await
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

/// The leaf certificate the server presented.
pub fn served_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

/// The ALPN protocol the handshake settled on.
pub fn negotiated_alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// One HTTP/2 GET over an established stream: (status, body).
pub async fn h2_get<S>(stream: S, authority: &str, path: &str) -> (u16, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.expect("h2 ready");
    let request = http::Request::get(format!("https://{authority}{path}"))
        .body(())
        .expect("request");
    let (response, _) = send.send_request(request, true).expect("send");
    let response = response.await.expect("h2 response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("h2 body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, bytes)
}

/// An origin speaking HTTP/2 without TLS (prior knowledge), answering every request
/// `200` with `h2 <path>`; counts requests.
pub struct H2Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
}

impl H2Origin {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Over TLS with `leaf`'s certificate, offering only h2 by ALPN.
    pub async fn start_tls(leaf: &Leaf) -> Self {
        let config = server_config(leaf, &[b"h2"]);
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let stream: Box<dyn crate::http::Transport> = match tls {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => Box::new(stream),
                            Err(_) => return,
                        },
                        None => Box::new(tcp),
                    };
                    let Ok(mut connection) = h2::server::handshake(stream).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = format!("h2 {}", request.uri().path());
                        let response = http::Response::builder()
                            .status(200)
                            .header("x-origin-protocol", format!("{:?}", request.version()))
                            .body(())
                            .expect("response");
                        if let Ok(mut stream) = respond.send_response(response, false) {
                            let _ = stream.send_data(Bytes::from(body), true);
                        }
                    }
                });
            }
        });
        Self { addr, hits }
    }
}

/// An HTTP/1.1 origin behind TLS with `leaf`'s certificate, answering every request
/// `200 tls-origin`.
pub async fn start_tls_origin(leaf: &Leaf) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(leaf, &[])));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buffer = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        buffer.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\ntls-origin";
                        if tls.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A TLS server config with `leaf`'s certificate, offering `alpn`.
fn server_config(leaf: &Leaf, alpn: &[&[u8]]) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}
