//! Host and `:authority` values: `host [ ":" port ]` where host is an IP literal, an
//! IPv4 address or an RFC 3986 reg-name. Anything else (quotes, spaces, commas outside
//! the reg-name set, userinfo, an empty or out-of-range port) is refused, so what
//! routing matches on and what the gateway writes into forwarding headers is always
//! this grammar and never a client's free text.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{hex_value, is_sub_delim, is_unreserved};

/// The longest host name DNS can carry, with its optional trailing dot.
const MAX_NAME: usize = 254;

/// What kind of host an authority names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A DNS-style name: labels of letters, digits, `-` and `_`, 1 to 63 bytes each,
    /// optionally ending in a dot. Routing matches only these and IP addresses.
    Name(&'a str),
    Ipv4(Ipv4Addr),
    /// The brackets included, as written.
    Ipv6(&'a str),
    /// A valid RFC 3986 reg-name that is not a DNS name (`a;b`, `%41`, `a..b`): may be
    /// forwarded, never matched against a route's host.
    RegName(&'a str),
}

/// A checked authority, borrowing from the value it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: Host<'a>,
    pub port: Option<u16>,
    /// The whole value as written (it passed the grammar, so it is safe to repeat).
    pub text: &'a str,
}

impl<'a> Authority<'a> {
    /// The host to match routes against: names and IP addresses, never reg-names.
    pub fn route_host(&self) -> Option<&'a str> {
        match self.host {
            Host::Name(name) | Host::Ipv6(name) => Some(name),
            Host::Ipv4(_) => self.text.split(':').next(),
            Host::RegName(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("empty host")]
    Empty,
    #[error("byte 0x{0:02x} is not allowed in a host")]
    Character(u8),
    #[error("malformed percent-encoding in the host")]
    PercentEncoding,
    #[error("malformed IP literal")]
    IpLiteral,
    #[error("the port is not a number from 0 to 65535")]
    Port,
    #[error("the host name is longer than {MAX_NAME} bytes")]
    TooLong,
}

/// Parses `host [ ":" port ]`.
pub fn parse(value: &[u8]) -> Result<Authority<'_>, AuthorityError> {
    let text = std::str::from_utf8(value)
        .map_err(|e| AuthorityError::Character(value.get(e.valid_up_to()).copied().unwrap_or(0)))?;
    if text.is_empty() {
        return Err(AuthorityError::Empty);
    }
    let (host, port) = if text.starts_with('[') {
        let end = text.find(']').ok_or(AuthorityError::IpLiteral)?;
        let (literal, rest) = text.split_at(end + 1);
        let inner = &literal[1..literal.len() - 1];
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| AuthorityError::IpLiteral)?;
        (Host::Ipv6(literal), rest)
    } else {
        let end = text.find(':').unwrap_or(text.len());
        let (name, rest) = text.split_at(end);
        (reg_name(name)?, rest)
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        None => return Err(AuthorityError::Character(port.as_bytes()[0])),
        Some(digits) => Some(parse_port(digits)?),
    };
    Ok(Authority { host, port, text })
}

fn parse_port(digits: &str) -> Result<u16, AuthorityError> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::Port);
    }
    digits.parse().map_err(|_| AuthorityError::Port)
}

/// RFC 3986 `reg-name = *( unreserved / pct-encoded / sub-delims )`, non-empty here,
/// then classified.
fn reg_name(name: &str) -> Result<Host<'_>, AuthorityError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if bytes.len() > MAX_NAME {
        return Err(AuthorityError::TooLong);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let valid = bytes.get(i + 1).copied().and_then(hex_value).is_some()
                && bytes.get(i + 2).copied().and_then(hex_value).is_some();
            if !valid {
                return Err(AuthorityError::PercentEncoding);
            }
            i += 3;
            continue;
        }
        if !is_unreserved(b) && !is_sub_delim(b) {
            return Err(AuthorityError::Character(b));
        }
        i += 1;
    }
    if let Ok(v4) = name.parse::<Ipv4Addr>() {
        return Ok(Host::Ipv4(v4));
    }
    Ok(if is_dns_name(name) {
        Host::Name(name)
    } else {
        Host::RegName(name)
    })
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_ports() {
        let a = parse(b"api.example.com:8080").expect("valid");
        assert_eq!(a.host, Host::Name("api.example.com"));
        assert_eq!(a.port, Some(8080));
        assert_eq!(a.route_host(), Some("api.example.com"));
        let a = parse(b"10.0.0.1").expect("valid");
        assert_eq!(a.host, Host::Ipv4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(a.route_host(), Some("10.0.0.1"));
        assert_eq!(
            parse(b"10.0.0.1:80").expect("valid").route_host(),
            Some("10.0.0.1")
        );
        let a = parse(b"[::1]:443").expect("valid");
        assert_eq!(a.host, Host::Ipv6("[::1]"));
        assert_eq!(a.port, Some(443));
        assert_eq!(
            parse(b"Example.COM.").expect("valid").host,
            Host::Name("Example.COM.")
        );
    }

    #[test]
    fn reg_names_are_forwarded_but_never_routed() {
        for value in [&b"a;b"[..], b"%41pi", b"a..b", b"x!y"] {
            let a = parse(value).expect("valid reg-name");
            assert!(matches!(a.host, Host::RegName(_)), "{value:?}");
            assert_eq!(a.route_host(), None);
        }
    }

    #[test]
    fn forwarded_injection_and_garbage_are_refused() {
        assert_eq!(
            parse(b"x\", for=6.6.6.6;proto=https;host=\"www.example.com").map(|a| a.text),
            Err(AuthorityError::Character(b'"'))
        );
        for bad in [
            &b""[..],
            b"a b",
            b"user@host",
            b"host:",
            b"host:99999",
            b"host:8o",
            b"[::1",
            b"[v1.x]",
            b"[::1]x",
            b"a/b",
            b"a\\b",
            b"%4",
            b"%zz",
            b"a\0b",
            b"h\xc3\xa9",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&[b'a'; 255]), Err(AuthorityError::TooLong));
    }
}
