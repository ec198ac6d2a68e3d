//! Which `Host` values the admin listener answers to.
//!
//! DNS rebinding makes a browser send requests for `evil.example:9901` to 127.0.0.1;
//! the name in `Host` is the one thing the attacker cannot choose to be ours. So a
//! request must name `localhost`, a loopback address, the admin's own address (or the
//! address the connection arrived on, for a wildcard bind reached by IP, as Prometheus
//! and Kubernetes probes do), or an `admin.allowed_hosts` entry. The port is not
//! compared: a browser always sends the port it connected to, and SSH or `kubectl`
//! port-forwards legitimately change it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::Version;
use pingora::http::RequestHeader;

use super::refusal::{Refusal, shown};
use crate::config::AdminSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// Lowercase.
    Name(String),
    Ip(IpAddr),
}

/// `host[:port]` as found in `Host`, an absolute request target or an `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: HostName,
    pub port: Option<u16>,
}

/// Parses `host[:port]` strictly: a DNS name, an IPv4 address or a bracketed IPv6
/// address, and an optional port of 1-5 digits. No user info, no trailing dot.
pub fn parse_authority(text: &str) -> Option<Authority> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':')?)?),
        };
        (HostName::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (text, None),
        };
        let name = match host.parse::<Ipv4Addr>() {
            Ok(ip) => HostName::Ip(IpAddr::V4(ip)),
            Err(_) if valid_name(host) => HostName::Name(host.to_ascii_lowercase()),
            Err(_) => return None,
        };
        (name, port)
    };
    Some(Authority { host, port })
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Canonical form for comparison: an IPv4 address reached over an IPv6 socket is the
/// IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Always allowed: `localhost`, 127.0.0.1, ::1, the admin's own address.
    builtin: Vec<HostName>,
    /// `admin.allowed_hosts`: also trusted as origins of state changes.
    configured: Vec<HostName>,
}

impl HostPolicy {
    pub fn new(admin: &AdminSpec) -> Self {
        let mut builtin = vec![
            HostName::Name("localhost".into()),
            HostName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            HostName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        let own = canonical(admin.address.ip());
        if !own.is_unspecified() && !builtin.contains(&HostName::Ip(own)) {
            builtin.push(HostName::Ip(own));
        }
        let configured = admin
            .allowed_hosts
            .iter()
            .map(|entry| match entry.parse::<IpAddr>() {
                Ok(ip) => HostName::Ip(canonical(ip)),
                Err(_) => HostName::Name(entry.clone()),
            })
            .collect();
        Self {
            builtin,
            configured,
        }
    }

    /// Whether `host` may be named in a request that arrived on `local` (the address
    /// the connection was accepted on).
    pub fn allows(&self, host: &HostName, local: Option<IpAddr>) -> bool {
        let host = match host {
            HostName::Ip(ip) => &HostName::Ip(canonical(*ip)),
            name => name,
        };
        self.builtin.contains(host)
            || self.configured.contains(host)
            || matches!((host, local), (HostName::Ip(ip), Some(local)) if !local.is_unspecified() && *ip == canonical(local))
    }

    /// Whether `host` is one of `admin.allowed_hosts`.
    pub fn configured(&self, host: &HostName) -> bool {
        let host = match host {
            HostName::Ip(ip) => &HostName::Ip(canonical(*ip)),
            name => name,
        };
        self.configured.contains(host)
    }

    /// Checks the request's `Host` (and an absolute-form target's authority, which
    /// takes precedence over it in HTTP/1.1). Returns the `Host` authority, or None for
    /// an HTTP/1.0 request without one: browsers always send `Host`, so such a request
    /// cannot be a rebinding attack (HAProxy's default health check sends exactly that).
    pub fn check(
        &self,
        request: &RequestHeader,
        local: Option<IpAddr>,
    ) -> Result<Option<Authority>, Refusal> {
        let mut values = request.headers.get_all(http::header::HOST).iter();
        let header = values.next();
        if values.next().is_some() {
            return Err(Refusal::BadHost("more than one Host header"));
        }
        if let Some(target) = target_authority(request.raw_path()) {
            self.allowed_authority(target, local)?;
        }
        match header {
            Some(value) => self.allowed_authority(value.as_bytes(), local).map(Some),
            None if request.version <= Version::HTTP_10 => Ok(None),
            None => Err(Refusal::BadHost("an HTTP/1.1 request needs one")),
        }
    }

    fn allowed_authority(&self, value: &[u8], local: Option<IpAddr>) -> Result<Authority, Refusal> {
        let authority = std::str::from_utf8(value)
            .ok()
            .and_then(parse_authority)
            .ok_or(Refusal::BadHost("not host[:port]"))?;
        if self.allows(&authority.host, local) {
            Ok(authority)
        } else {
            Err(Refusal::MisdirectedHost(shown(value)))
        }
    }
}

/// The authority of an absolute-form (`http://host/path`) or authority-form
/// (`host:port`) request target; None for the usual `/path` or `*`. Pingora keeps such a
/// target only in its raw bytes.
fn target_authority(raw: &[u8]) -> Option<&[u8]> {
    if raw.starts_with(b"/") || raw == b"*" {
        return None;
    }
    let rest = raw
        .windows(3)
        .position(|w| w == b"://")
        .map_or(raw, |at| &raw[at + 3..]);
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(address: &str, allowed: &[&str]) -> HostPolicy {
        HostPolicy::new(&AdminSpec {
            address: address.parse().expect("address"),
            token: None,
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn request(version: Version, target: &str, hosts: &[&str]) -> RequestHeader {
        let mut request =
            RequestHeader::build("GET", target.as_bytes(), None).expect("request header");
        request.set_version(version);
        for host in hosts {
            request.append_header("host", *host).expect("host header");
        }
        request
    }

    fn verdict(policy: &HostPolicy, host: &str) -> Result<(), u16> {
        policy
            .check(&request(Version::HTTP_11, "/metrics", &[host]), None)
            .map(|_| ())
            .map_err(|r| r.status())
    }

    #[test]
    fn loopback_names_and_the_admin_address_pass_with_or_without_port() {
        let p = policy("10.0.0.5:9901", &[]);
        for host in [
            "localhost",
            "LOCALHOST:9901",
            "127.0.0.1",
            "127.0.0.1:9901",
            "[::1]:9901",
            "[::1]",
            "10.0.0.5:9901",
            "localhost:19901",
        ] {
            assert_eq!(verdict(&p, host), Ok(()), "{host}");
        }
    }

    #[test]
    fn other_names_are_misdirected_and_garbage_is_a_bad_request() {
        let p = policy("127.0.0.1:9901", &["gw-admin.internal"]);
        for host in [
            "evil.example:9901",
            "evil.example",
            "localhost.evil.example",
            "app.localhost",
            "10.0.0.5:9901",
            "0177.0.0.1",
            "2130706433",
            "0.0.0.0",
        ] {
            assert_eq!(verdict(&p, host), Err(421), "{host}");
        }
        for host in [
            "",
            "localhost:",
            "localhost:99999",
            "localhost.",
            "user@localhost",
            "::1",
            "[::1",
            "localhost/x",
            "localhost:80:80",
        ] {
            assert_eq!(verdict(&p, host), Err(400), "{host:?}");
        }
        assert_eq!(verdict(&p, "GW-Admin.Internal:443"), Ok(()));
    }

    #[test]
    fn a_wildcard_bind_answers_to_the_address_the_connection_came_in_on() {
        let p = policy("0.0.0.0:9901", &[]);
        let probe = request(Version::HTTP_11, "/ready", &["10.1.2.3:9901"]);
        assert!(
            p.check(&probe, Some("10.1.2.3".parse().expect("ip")))
                .is_ok()
        );
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert!(p.check(&probe, Some(mapped)).is_ok());
        assert!(
            p.check(&probe, Some("10.9.9.9".parse().expect("ip")))
                .is_err()
        );
        assert!(p.check(&probe, None).is_err());
    }

    #[test]
    fn host_is_required_on_http11_once_and_the_absolute_target_counts_too() {
        let p = policy("127.0.0.1:9901", &[]);
        let none_10 = request(Version::HTTP_10, "/health", &[]);
        assert_eq!(p.check(&none_10, None), Ok(None));
        let none_11 = request(Version::HTTP_11, "/health", &[]);
        assert_eq!(p.check(&none_11, None).map_err(|r| r.status()), Err(400));
        let twice = request(Version::HTTP_11, "/health", &["localhost", "localhost"]);
        assert_eq!(p.check(&twice, None).map_err(|r| r.status()), Err(400));
        let absolute = request(
            Version::HTTP_11,
            "http://evil.example:9901/admin/config",
            &["127.0.0.1:9901"],
        );
        assert_eq!(p.check(&absolute, None).map_err(|r| r.status()), Err(421));
        let absolute_10 = request(Version::HTTP_10, "http://evil.example/admin/config", &[]);
        assert_eq!(
            p.check(&absolute_10, None).map_err(|r| r.status()),
            Err(421)
        );
    }
}
