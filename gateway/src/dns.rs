//! Looks up the addresses of a host-name endpoint, off the request path: at config load
//! and from the endpoint refresher's thread (`endpoint_refresh.rs`), never per request.
//!
//! Two ways, chosen by `server.dns.nameservers`: without it, the system's resolver
//! (`getaddrinfo`: `/etc/hosts`, search domains, nsswitch), which says nothing of TTLs;
//! with it, A and AAAA queries over UDP to those servers in order (the wire format by
//! hickory-proto), whose answers carry the TTL the refresher honours. Answers are
//! hostile input: only a response to our own query id, from the server asked, with our
//! question, is read, and only its A and AAAA records.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// Where and how long to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSpec {
    /// Empty: the system resolver.
    pub nameservers: Vec<SocketAddr>,
    /// Per query and server.
    pub timeout: Duration,
}

impl Default for ResolverSpec {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Sorted, without repeats; never empty.
    pub addresses: Vec<SocketAddr>,
    /// The shortest TTL among the records (None from the system resolver).
    pub ttl: Option<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("`{0}` does not resolve: {1}")]
    System(String, String),
    #[error("`{0}` does not exist (NXDOMAIN from {1})")]
    NoSuchName(String, SocketAddr),
    #[error("`{0}` has no A or AAAA record")]
    NoAddresses(String),
    #[error("`{0}`: no name server answered ({1})")]
    NoAnswer(String, String),
    #[error("`{0}` is not a valid host name")]
    BadName(String),
}

pub fn lookup(spec: &ResolverSpec, host: &str, port: u16) -> Result<Answer, LookupError> {
    if spec.nameservers.is_empty() {
        return system(host, port);
    }
    let mut name = Name::from_ascii(host).map_err(|_| LookupError::BadName(host.to_string()))?;
    // Asked as written, no search domains: the name as the server will echo it.
    name.set_fqdn(true);
    let mut problems = Vec::new();
    for server in &spec.nameservers {
        match ask_both(*server, &name, spec.timeout) {
            Ok(Some((ips, ttl))) => {
                let mut addresses: Vec<SocketAddr> = ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                addresses.sort();
                addresses.dedup();
                if addresses.is_empty() {
                    return Err(LookupError::NoAddresses(host.to_string()));
                }
                return Ok(Answer { addresses, ttl });
            }
            Ok(None) => return Err(LookupError::NoSuchName(host.to_string(), *server)),
            Err(problem) => problems.push(format!("{server}: {problem}")),
        }
    }
    Err(LookupError::NoAnswer(host.to_string(), problems.join("; ")))
}

fn system(host: &str, port: u16) -> Result<Answer, LookupError> {
    let mut addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| LookupError::System(host.to_string(), e.to_string()))?
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(LookupError::NoAddresses(host.to_string()));
    }
    Ok(Answer {
        addresses,
        ttl: None,
    })
}

/// A then AAAA from one server: the addresses and the shortest TTL, None for NXDOMAIN,
/// Err when the server did not answer usefully.
type Found = Option<(Vec<IpAddr>, Option<Duration>)>;

fn ask_both(server: SocketAddr, name: &Name, timeout: Duration) -> Result<Found, String> {
    let mut ips = Vec::new();
    let mut ttl: Option<u32> = None;
    for kind in [RecordType::A, RecordType::AAAA] {
        let Some(records) = ask(server, name, kind, timeout)? else {
            return Ok(None);
        };
        for (ip, record_ttl) in records {
            ips.push(ip);
            ttl = Some(ttl.map_or(record_ttl, |t| t.min(record_ttl)));
        }
    }
    Ok(Some((ips, ttl.map(|t| Duration::from_secs(u64::from(t))))))
}

/// One query, one answer: `(address, ttl)` of each matching record.
fn ask(
    server: SocketAddr,
    name: &Name,
    kind: RecordType,
    timeout: Duration,
) -> Result<Option<Vec<(IpAddr, u32)>>, String> {
    let id: u16 = rand::random();
    let mut query = Message::new();
    query
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), kind));
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    socket.send(&bytes).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {timeout:?}"));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match socket.recv(&mut buffer) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no answer within {timeout:?}"));
            }
            Err(e) => return Err(e.to_string()),
        };
        // Anything but the answer to this query (a late answer, a forgery) is skipped.
        let Ok(answer) = Message::from_vec(&buffer[..n]) else {
            continue;
        };
        let ours = answer.id() == id
            && answer.message_type() == MessageType::Response
            && answer.queries().len() == 1
            && answer.queries()[0].name() == name
            && answer.queries()[0].query_type() == kind;
        if !ours {
            continue;
        }
        return match answer.response_code() {
            ResponseCode::NoError => Ok(Some(
                answer
                    .answers()
                    .iter()
                    .filter_map(|record| match record.data() {
                        RData::A(a) if kind == RecordType::A => {
                            Some((IpAddr::V4(a.0), record.ttl()))
                        }
                        RData::AAAA(a) if kind == RecordType::AAAA => {
                            Some((IpAddr::V6(a.0), record.ttl()))
                        }
                        _ => None,
                    })
                    .collect(),
            )),
            ResponseCode::NXDomain => Ok(None),
            other => Err(format!("answered {other}")),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Record, rdata};

    /// A name server on loopback answering one query with `reply(query)`.
    fn serve_once(reply: impl FnOnce(Message) -> Vec<u8> + Send + 'static) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let mut reply = Some(reply);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            for _ in 0..2 {
                let Ok((n, from)) = socket.recv_from(&mut buffer) else {
                    return;
                };
                let query = Message::from_vec(&buffer[..n]).expect("query");
                let kind = query.queries()[0].query_type();
                let mut bytes = Vec::new();
                if let (RecordType::A, Some(reply)) = (kind, reply.take()) {
                    bytes = reply(query);
                    let _ = socket.send_to(&bytes, from);
                    continue;
                }
                let mut empty = Message::new();
                empty
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .add_queries(query.queries().to_vec());
                bytes.extend(empty.to_vec().expect("encode"));
                let _ = socket.send_to(&bytes, from);
                return;
            }
        });
        addr
    }

    fn spec(server: SocketAddr) -> ResolverSpec {
        ResolverSpec {
            nameservers: vec![server],
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn a_records_and_the_shortest_ttl_are_read() {
        let server = serve_once(|query| {
            let name = query.queries()[0].name().clone();
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .add_queries(query.queries().to_vec());
            for (ip, ttl) in [([127, 0, 0, 3], 30), ([127, 0, 0, 2], 5)] {
                answer.add_answer(Record::from_rdata(
                    name.clone(),
                    ttl,
                    RData::A(rdata::A(ip.into())),
                ));
            }
            answer.to_vec().expect("encode")
        });
        let answer = lookup(&spec(server), "svc.test", 8080).expect("lookup");
        assert_eq!(
            answer.addresses,
            vec![
                "127.0.0.2:8080".parse().expect("addr"),
                "127.0.0.3:8080".parse().expect("addr")
            ]
        );
        assert_eq!(answer.ttl, Some(Duration::from_secs(5)));
    }

    #[test]
    fn an_answer_to_another_query_is_not_read() {
        let server = serve_once(|query| {
            let mut answer = Message::new();
            answer
                .set_id(query.id().wrapping_add(1))
                .set_message_type(MessageType::Response)
                .add_queries(query.queries().to_vec());
            answer.to_vec().expect("encode")
        });
        let error = lookup(&spec(server), "svc.test", 80).expect_err("forged id");
        assert!(matches!(error, LookupError::NoAnswer(..)), "{error}");
    }

    #[test]
    fn nxdomain_and_empty_answers_are_errors() {
        let server = serve_once(|query| {
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_response_code(ResponseCode::NXDomain)
                .add_queries(query.queries().to_vec());
            answer.to_vec().expect("encode")
        });
        assert!(matches!(
            lookup(&spec(server), "gone.test", 80),
            Err(LookupError::NoSuchName(..))
        ));
        let server = serve_once(|query| {
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .add_queries(query.queries().to_vec());
            answer.to_vec().expect("encode")
        });
        assert!(matches!(
            lookup(&spec(server), "empty.test", 80),
            Err(LookupError::NoAddresses(..))
        ));
    }

    #[test]
    fn the_system_resolver_reads_localhost() {
        let answer = lookup(&ResolverSpec::default(), "localhost", 80).expect("localhost");
        assert!(answer.addresses.iter().all(|a| a.ip().is_loopback()));
        assert_eq!(answer.ttl, None);
    }
}
