//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer that forwards TCP
//! says in the connection's first bytes who the client really is. On a listener with
//! `proxy_protocol: true` every connection must start with such a header (as HAProxy's
//! `accept-proxy` and Envoy's listener filter require), read before the TLS handshake
//! on a TLS listener. The address it names replaces the peer address in the connection's socket
//! digest, so forwarding headers, access logs, plugins and `trusted_proxies` all see the
//! client, not the balancer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use pingora::protocols::{SocketDigest, UniqueID};
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Addresses plus TLVs; HAProxy sends far less.
const V2_MAX_BODY: usize = 1024;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address (and the address it connected to).
    Proxied {
        client: SocketAddr,
        dest: SocketAddr,
    },
    /// `LOCAL` / `UNKNOWN`: the balancer's own connection (health checks); keep the peer.
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(&'static str),
}

/// Parses a header at the start of `bytes`: `Ok(None)` when more bytes are needed,
/// else what it says and how many bytes it took.
pub fn parse(bytes: &[u8]) -> Result<Option<(Source, usize)>, HeaderError> {
    if bytes.starts_with(V2_SIGNATURE)
        || V2_SIGNATURE.starts_with(bytes) && bytes.first() == Some(&b'\r')
    {
        return parse_v2(bytes);
    }
    let prefix = b"PROXY ";
    let n = prefix.len().min(bytes.len());
    if bytes[..n] != prefix[..n] {
        return Err(HeaderError::Missing);
    }
    parse_v1(bytes)
}

fn parse_v1(bytes: &[u8]) -> Result<Option<(Source, usize)>, HeaderError> {
    let Some(end) = bytes.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX {
            Err(HeaderError::V1("no CRLF within 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&bytes[..end]).map_err(|_| HeaderError::V1("not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Source::Local,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, HeaderError> {
                let ip: IpAddr = s.parse().map_err(|_| HeaderError::V1("bad address"))?;
                match (*family, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(HeaderError::V1("address does not match the family")),
                }
            };
            let port = |s: &str| -> Result<u16, HeaderError> {
                let plain = !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s == "0" || !s.starts_with('0'));
                plain
                    .then(|| s.parse().ok())
                    .flatten()
                    .ok_or(HeaderError::V1("bad port"))
            };
            Source::Proxied {
                client: SocketAddr::new(ip(src)?, port(sport)?),
                dest: SocketAddr::new(ip(dst)?, port(dport)?),
            }
        }
        _ => {
            return Err(HeaderError::V1(
                "expected PROXY TCP4|TCP6|UNKNOWN src dst sport dport",
            ));
        }
    };
    Ok(Some((source, end + 2)))
}

fn parse_v2(bytes: &[u8]) -> Result<Option<(Source, usize)>, HeaderError> {
    if bytes.len() < 16 {
        return Ok(None);
    }
    let version_command = bytes[12];
    if version_command >> 4 != 2 {
        return Err(HeaderError::V2("version is not 2"));
    }
    let length = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if length > V2_MAX_BODY {
        return Err(HeaderError::V2("longer than 1024 bytes"));
    }
    let total = 16 + length;
    if bytes.len() < total {
        return Ok(None);
    }
    let body = &bytes[16..total];
    let source = match (version_command & 0x0f, bytes[13]) {
        (0x0, _) => Source::Local,
        (0x1, 0x11) if body.len() >= 12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Source::Proxied {
                client: SocketAddr::new(ip(0), port(8)),
                dest: SocketAddr::new(ip(4), port(10)),
            }
        }
        (0x1, 0x21) if body.len() >= 36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Source::Proxied {
                client: SocketAddr::new(ip(0), port(32)),
                dest: SocketAddr::new(ip(16), port(34)),
            }
        }
        // UNSPEC and UNIX families carry no TCP client to name.
        (0x1, 0x00 | 0x31 | 0x32) => Source::Local,
        (0x1, 0x11 | 0x21) => return Err(HeaderError::V2("address block too short")),
        (0x1, _) => return Err(HeaderError::V2("unknown address family")),
        _ => return Err(HeaderError::V2("unknown command")),
    };
    Ok(Some((source, total)))
}

/// Reads the header within `timeout`, and not a byte past it: what follows (a TLS
/// ClientHello, a request) stays in the stream for whoever reads next.
pub async fn read<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Source, HeaderError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = Vec::with_capacity(V1_MAX);
    loop {
        if let Some((source, _)) = parse(&buffer)? {
            return Ok(source);
        }
        let start = buffer.len();
        buffer.resize(start + still_needed(&buffer), 0);
        let read = tokio::time::timeout_at(deadline, stream.read_exact(&mut buffer[start..]));
        if !matches!(read.await, Ok(Ok(_))) {
            // Closed, failed or too slow: there is no header to believe.
            return Err(HeaderError::Missing);
        }
    }
}

/// How many more bytes are certainly part of a header that `parse` found incomplete.
fn still_needed(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 1,
        // v2: the 16-byte fixed part, then the length it gives.
        Some(b'\r') if bytes.len() < 16 => 16 - bytes.len(),
        Some(b'\r') => 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]])) - bytes.len(),
        // v1 ends at CRLF: two more bytes at least, one when the last was CR.
        Some(_) if bytes.last() == Some(&b'\r') => 1,
        Some(_) => 2,
    }
}

/// The socket digest of a connection whose client is `client`: the same descriptor
/// (for TCP_INFO and friends), the addresses the header gave.
pub fn digest_for<S: UniqueID + ?Sized>(stream: &S, source: Source) -> Option<SocketDigest> {
    let Source::Proxied { client, dest } = source else {
        return None;
    };
    let digest = SocketDigest::from_raw_fd(stream.id());
    let _ = digest.peer_addr.set(Some(client.into()));
    let _ = digest.local_addr.set(Some(dest.into()));
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(client: &str, dest: &str) -> Source {
        Source::Proxied {
            client: client.parse().expect("addr"),
            dest: dest.parse().expect("addr"),
        }
    }

    #[test]
    fn version_1() {
        let header = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        assert_eq!(
            parse(header),
            Ok(Some((proxied("192.0.2.1:56324", "198.51.100.2:443"), 45)))
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"),
            Ok(Some((proxied("[2001:db8::1]:1", "[::1]:2"), 32)))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((Source::Local, 15))));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 198.5"), Ok(None));
        assert_eq!(parse(b"PRO"), Ok(None));
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", bad.escape_ascii());
        }
        assert!(parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'x'].repeat(20)).is_err());
    }

    #[test]
    fn version_2() {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 1, 127, 0, 0, 1, 0x1f, 0x90, 0, 80,
        ]);
        header.extend_from_slice(b"rest");
        assert_eq!(
            parse(&header),
            Ok(Some((proxied("192.0.2.1:8080", "127.0.0.1:80"), 28)))
        );
        assert_eq!(parse(&header[..20]), Ok(None));
        assert_eq!(parse(&header[..5]), Ok(None));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Ok(Some((Source::Local, 16))));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&huge).is_err());
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&short).is_err());
        let mut v1_in_v2 = V2_SIGNATURE.to_vec();
        v1_in_v2.extend_from_slice(&[0x11, 0x11, 0, 0]);
        assert!(parse(&v1_in_v2).is_err());
    }
}
