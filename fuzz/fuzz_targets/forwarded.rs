//! RFC 7239 `Forwarded` (`gateway::syntax::forwarded`): checking what a trusted proxy
//! sent, and writing the gateway's own element.
//!
//! Properties: `is_valid` never panics on any bytes; the gateway's element is valid
//! whatever host string goes in, is one element of `for`, `proto` and (when
//! written) `host` parameters whose values read back as exactly what went in, and stays
//! valid appended to a valid value (as `proxy::headers` appends it).
#![no_main]

use std::net::IpAddr;

use arbitrary::Arbitrary;
use gateway::syntax::forwarded::{element, is_valid};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    client: Option<Client>,
    https: bool,
    host: Option<&'a str>,
    /// A value a trusted proxy sent before us.
    previous: &'a [u8],
}

#[derive(Debug, Arbitrary)]
enum Client {
    V4([u8; 4]),
    V6([u8; 16]),
}

fuzz_target!(|input: Input<'_>| {
    let previous_valid = is_valid(input.previous);
    let client = input.client.map(|c| match c {
        Client::V4(b) => IpAddr::from(b),
        Client::V6(b) => IpAddr::from(b),
    });
    // What the gateway passes; the host is the part a client controls.
    let proto = if input.https { "https" } else { "http" };
    let ours = element(client, proto, input.host);
    assert!(is_valid(ours.as_bytes()), "invalid element {ours:?}");
    let pairs = read_element(&ours);
    let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names == ["for", "proto"] || names == ["for", "proto", "host"],
        "{ours:?} has parameters {names:?}"
    );
    let expected_for = match client {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        None => "unknown".to_string(),
    };
    assert_eq!(pairs[0].1, expected_for);
    assert_eq!(pairs[1].1, proto, "proto reads back");
    if let Some((_, host)) = pairs.get(2) {
        assert_eq!(Some(host.as_str()), input.host, "host reads back");
    }
    if previous_valid {
        let mut joined = input.previous.to_vec();
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(ours.as_bytes());
        assert!(is_valid(&joined), "{:?}", joined.escape_ascii().to_string());
    }
});

/// The parameters of one element as (name, unescaped value); panics on anything that
/// is not exactly one element. Written apart from the gateway's own code on purpose.
fn read_element(text: &str) -> Vec<(String, String)> {
    let bytes = text.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let eq = text[i..].find('=').map(|at| i + at).expect("name=value");
        let name = text[i..eq].to_string();
        i = eq + 1;
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match bytes.get(i) {
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        value.push(*bytes.get(i + 1).expect("escaped byte"));
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                    None => panic!("unterminated quoted-string in {text:?}"),
                }
            }
        } else {
            while let Some(&b) = bytes.get(i).filter(|&&b| b != b';') {
                assert_ne!(b, b',', "a second element in {text:?}");
                value.push(b);
                i += 1;
            }
        }
        pairs.push((name, String::from_utf8(value).expect("UTF-8 value")));
        match bytes.get(i) {
            None => {}
            Some(b';') => i += 1,
            Some(_) => panic!("junk after a value in {text:?}"),
        }
    }
    pairs
}
