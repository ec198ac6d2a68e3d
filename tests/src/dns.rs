//! A name server the test controls: answers A queries for any name with what the test
//! set last (addresses and TTL, SERVFAIL, an empty answer, or silence), AAAA queries
//! with no record. Plain UDP on loopback, on a thread of its own; stops on drop.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata};

#[derive(Debug, Clone)]
pub enum DnsAnswer {
    Records {
        addresses: Vec<Ipv4Addr>,
        ttl: u32,
    },
    ServFail,
    /// NOERROR without a record.
    Empty,
    /// No reply at all.
    Silent,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    answer: Arc<Mutex<DnsAnswer>>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    pub fn start(answer: DnsAnswer) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("dns bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = socket.local_addr().expect("dns addr");
        let server = DnsServer {
            addr,
            answer: Arc::new(Mutex::new(answer)),
            stop: Arc::default(),
        };
        let (answer, stop) = (Arc::clone(&server.answer), Arc::clone(&server.stop));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buffer[..n]) else {
                    continue;
                };
                let current = answer.lock().expect("answer").clone();
                if let Some(reply) = reply(&query, &current) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        server
    }

    /// What the server answers from now on.
    pub fn set(&self, answer: DnsAnswer) {
        *self.answer.lock().expect("answer") = answer;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn reply(query: &Message, answer: &DnsAnswer) -> Option<Vec<u8>> {
    let question = query.queries().first()?;
    let mut message = Message::new();
    message
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_recursion_available(true)
        .add_queries(query.queries().to_vec());
    match answer {
        DnsAnswer::Silent => return None,
        DnsAnswer::ServFail => {
            message.set_response_code(ResponseCode::ServFail);
        }
        DnsAnswer::Empty => {}
        DnsAnswer::Records { addresses, ttl } => {
            if question.query_type() == RecordType::A {
                for ip in addresses {
                    message.add_answer(Record::from_rdata(
                        question.name().clone(),
                        *ttl,
                        RData::A(rdata::A(*ip)),
                    ));
                }
            }
        }
    }
    message.to_vec().ok()
}
