//! Looks up the addresses of a host-name endpoint, off the request path: at config load
//! and from the endpoint refresher's thread (`endpoint_refresh.rs`), never per request.
//!
//! Two ways, chosen by `server.dns.nameservers`: without it, the system's resolver
//! (`getaddrinfo`: `/etc/hosts`, search domains, nsswitch), which says nothing of TTLs;
//! with it, A and AAAA queries over UDP to those servers in order (the wire format by
//! hickory-proto; EDNS(0) with a 1232-byte payload, a truncated answer asked again over
//! TCP), whose answers carry the TTL the refresher honours. Answers are
//! hostile input: only a response to our own query id, from the server asked, with our
//! question, is read, and only its A and AAAA records.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
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
/// Err when the server did not answer usefully. One family failing (an AAAA query a
/// firewall drops) does not lose the other's addresses.
type Found = Option<(Vec<IpAddr>, Option<Duration>)>;

fn ask_both(server: SocketAddr, name: &Name, timeout: Duration) -> Result<Found, String> {
    let mut ips = Vec::new();
    let mut ttl: Option<u32> = None;
    let mut problems = Vec::new();
    for kind in [RecordType::A, RecordType::AAAA] {
        match ask(server, name, kind, timeout) {
            Ok(None) => return Ok(None),
            Ok(Some(records)) => {
                for (ip, record_ttl) in records {
                    ips.push(ip);
                    ttl = Some(ttl.map_or(record_ttl, |t| t.min(record_ttl)));
                }
            }
            Err(problem) => problems.push(format!("{kind}: {problem}")),
        }
    }
    if ips.is_empty() && !problems.is_empty() {
        return Err(problems.join(", "));
    }
    Ok(Some((ips, ttl.map(|t| Duration::from_secs(u64::from(t))))))
}

/// Payload size announced with EDNS(0): the size DNS Flag Day 2020 settled on, which
/// needs no IP fragmentation; a bigger answer comes truncated and is asked over TCP.
const EDNS_PAYLOAD: u16 = 1232;

/// One query, one answer: `(address, ttl)` of each matching record.
fn ask(
    server: SocketAddr,
    name: &Name,
    kind: RecordType,
    timeout: Duration,
) -> Result<Option<Vec<(IpAddr, u32)>>, String> {
    let id: u16 = rand::random();
    let mut query = Message::new();
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    query
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), kind))
        .set_edns(edns);
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let ours = |answer: &Message| {
        answer.id() == id
            && answer.message_type() == MessageType::Response
            && answer.queries().len() == 1
            && answer.queries()[0].name() == name
            && answer.queries()[0].query_type() == kind
    };
    let mut answer = over_udp(server, &bytes, deadline, &ours)?;
    if answer.truncated() {
        // Every record, not the first few that fit: a large headless service.
        answer = over_tcp(server, &bytes, deadline, &ours)?;
    }
    match answer.response_code() {
        ResponseCode::NoError => Ok(Some(
            answer
                .answers()
                .iter()
                .filter_map(|record| match record.data() {
                    RData::A(a) if kind == RecordType::A => Some((IpAddr::V4(a.0), record.ttl())),
                    RData::AAAA(a) if kind == RecordType::AAAA => {
                        Some((IpAddr::V6(a.0), record.ttl()))
                    }
                    _ => None,
                })
                .collect(),
        )),
        ResponseCode::NXDomain => Ok(None),
        other => Err(format!("answered {other}")),
    }
}

fn left(deadline: Instant, timeout_text: &str) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(format!("no answer within {timeout_text}"))
    } else {
        Ok(left)
    }
}

fn over_udp(
    server: SocketAddr,
    query: &[u8],
    deadline: Instant,
    ours: &dyn Fn(&Message) -> bool,
) -> Result<Message, String> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    socket.send(query).map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; usize::from(EDNS_PAYLOAD)];
    loop {
        let wait = left(deadline, "the timeout")?;
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        let n = match socket.recv(&mut buffer) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("no answer within the timeout".into());
            }
            Err(e) => return Err(e.to_string()),
        };
        // Anything but the answer to this query (a late answer, a forgery) is skipped.
        if let Ok(answer) = Message::from_vec(&buffer[..n])
            && ours(&answer)
        {
            return Ok(answer);
        }
    }
}

/// The same query over TCP (RFC 7766): a two-byte length before each message.
fn over_tcp(
    server: SocketAddr,
    query: &[u8],
    deadline: Instant,
    ours: &dyn Fn(&Message) -> bool,
) -> Result<Message, String> {
    let io = |e: std::io::Error| format!("over TCP: {e}");
    let mut stream =
        TcpStream::connect_timeout(&server, left(deadline, "the timeout")?).map_err(io)?;
    stream
        .set_write_timeout(Some(left(deadline, "the timeout")?))
        .map_err(io)?;
    let length = u16::try_from(query.len()).map_err(|_| "query too long".to_string())?;
    stream.write_all(&length.to_be_bytes()).map_err(io)?;
    stream.write_all(query).map_err(io)?;
    stream
        .set_read_timeout(Some(left(deadline, "the timeout")?))
        .map_err(io)?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).map_err(io)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).map_err(io)?;
    match Message::from_vec(&answer) {
        Ok(message) if ours(&message) => Ok(message),
        _ => Err("over TCP: an answer to another question".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Record, rdata};

    /// A name server on `socket` (loopback) answering the A and the AAAA query of one
    /// lookup with `reply(query)`.
    fn serve(
        socket: UdpSocket,
        reply: impl Fn(&Message) -> Message + Send + 'static,
    ) -> SocketAddr {
        let addr = socket.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            for _ in 0..2 {
                let Ok((n, from)) = socket.recv_from(&mut buffer) else {
                    return;
                };
                let query = Message::from_vec(&buffer[..n]).expect("query");
                let answer = reply(&query).to_vec().expect("encode");
                let _ = socket.send_to(&answer, from);
            }
        });
        addr
    }

    fn on_loopback() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").expect("bind")
    }

    /// The answer to `query` with these A records (address, TTL); none for AAAA.
    fn answer_with(query: &Message, records: &[([u8; 4], u32)]) -> Message {
        let question = &query.queries()[0];
        let mut answer = Message::new();
        answer
            .set_id(query.id())
            .set_message_type(MessageType::Response)
            .add_queries(query.queries().to_vec());
        if question.query_type() == RecordType::A {
            for (ip, ttl) in records {
                answer.add_answer(Record::from_rdata(
                    question.name().clone(),
                    *ttl,
                    RData::A(rdata::A((*ip).into())),
                ));
            }
        }
        answer
    }

    fn is_a(query: &Message) -> bool {
        query.queries()[0].query_type() == RecordType::A
    }

    fn spec(server: SocketAddr) -> ResolverSpec {
        ResolverSpec {
            nameservers: vec![server],
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn a_records_and_the_shortest_ttl_are_read() {
        let server = serve(on_loopback(), |query| {
            answer_with(query, &[([127, 0, 0, 3], 30), ([127, 0, 0, 2], 5)])
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
        let server = serve(on_loopback(), |query| {
            let mut forged = answer_with(query, &[([127, 0, 0, 3], 30)]);
            forged.set_id(query.id().wrapping_add(1));
            forged
        });
        let error = lookup(&spec(server), "svc.test", 80).expect_err("forged id");
        assert!(matches!(error, LookupError::NoAnswer(..)), "{error}");
    }

    #[test]
    fn nxdomain_and_empty_answers_are_errors() {
        let server = serve(on_loopback(), |query| {
            let mut answer = answer_with(query, &[]);
            answer.set_response_code(ResponseCode::NXDomain);
            answer
        });
        assert!(matches!(
            lookup(&spec(server), "gone.test", 80),
            Err(LookupError::NoSuchName(..))
        ));
        let server = serve(on_loopback(), |query| answer_with(query, &[]));
        assert!(matches!(
            lookup(&spec(server), "empty.test", 80),
            Err(LookupError::NoAddresses(..))
        ));
    }

    #[test]
    fn a_truncated_answer_is_asked_again_over_tcp() {
        // UDP and TCP on one port, as a name server listens.
        let (udp, tcp) = loop {
            let udp = on_loopback();
            let port = udp.local_addr().expect("addr").port();
            if let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                break (udp, tcp);
            }
        };
        let server = serve(udp, |query| {
            let mut cut = answer_with(query, &[]);
            cut.set_truncated(is_a(query));
            cut
        });
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = tcp.accept() else {
                return;
            };
            let mut length = [0u8; 2];
            stream.read_exact(&mut length).expect("length");
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(length))];
            stream.read_exact(&mut query).expect("query");
            let query = Message::from_vec(&query).expect("query");
            let records: Vec<([u8; 4], u32)> = (1..=40).map(|n| ([10, 0, 0, n], 60)).collect();
            let answer = answer_with(&query, &records).to_vec().expect("encode");
            let length = u16::try_from(answer.len()).expect("length");
            stream.write_all(&length.to_be_bytes()).expect("write");
            stream.write_all(&answer).expect("write");
        });
        let answer = lookup(&spec(server), "big.test", 80).expect("lookup");
        assert_eq!(
            answer.addresses.len(),
            40,
            "every record, not those that fit"
        );
    }

    #[test]
    fn an_aaaa_failure_keeps_the_a_records() {
        let server = serve(on_loopback(), |query| {
            let mut answer = answer_with(query, &[([127, 0, 0, 9], 60)]);
            if !is_a(query) {
                answer.set_response_code(ResponseCode::ServFail);
            }
            answer
        });
        let answer = lookup(&spec(server), "v4.test", 80).expect("lookup");
        assert_eq!(
            answer.addresses,
            vec!["127.0.0.9:80".parse().expect("addr")]
        );
    }

    #[test]
    fn the_system_resolver_reads_localhost() {
        let answer = lookup(&ResolverSpec::default(), "localhost", 80).expect("localhost");
        assert!(answer.addresses.iter().all(|a| a.ip().is_loopback()));
        assert_eq!(answer.ttl, None);
    }
}
