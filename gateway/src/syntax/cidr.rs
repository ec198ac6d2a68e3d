//! CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`, or a bare address for one host): the
//! peers whose forwarding headers a listener believes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address")]
    Address(String),
    #[error("prefix length `{0}` is not a number from 0 to {1}")]
    Prefix(String, u8),
    #[error("`{0}` has bits set after its /{1} prefix (did you mean {2}?)")]
    HostBits(String, u8, String),
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (the low `width` bits of a u128) with everything after `prefix` cleared.
fn mask(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u128::MAX << (width - prefix) & (u128::MAX >> (128 - u32::from(width)));
    bits & keep
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (address, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let network: IpAddr = address
            .parse()
            .map_err(|_| CidrError::Address(address.to_string()))?;
        let network = network.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            // Plain digits: u8's parser would also take a leading `+`.
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= width)
                .ok_or_else(|| CidrError::Prefix(p.to_string(), width))?,
        };
        let cidr = Cidr { network, prefix };
        let bits = match network {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let masked = mask(bits, width, prefix);
        if masked != bits {
            let suggested = match network {
                IpAddr::V4(_) => IpAddr::from((masked as u32).to_be_bytes()),
                IpAddr::V6(_) => IpAddr::from(masked.to_be_bytes()),
            };
            return Err(CidrError::HostBits(
                s.to_string(),
                prefix,
                format!("{suggested}/{prefix}"),
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ranges_contain_their_addresses() -> Result<(), CidrError> {
        let net: Cidr = "10.1.0.0/16".parse()?;
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(
            net.contains(ip("::ffff:10.1.0.9")),
            "IPv4-mapped peers count"
        );
        let one: Cidr = "127.0.0.1".parse()?;
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse()?;
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let v6: Cidr = "2001:db8::/32".parse()?;
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!("::1/128".parse::<Cidr>()?.contains(ip("::1")));
        Ok(())
    }

    #[test]
    fn malformed_ranges_say_what_is_wrong() {
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix(..))
        ));
        assert!(matches!(
            "10.0.0.0/+8".parse::<Cidr>(),
            Err(CidrError::Prefix(..))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
        assert_eq!(
            "10.1.2.3/16".parse::<Cidr>(),
            Err(CidrError::HostBits(
                "10.1.2.3/16".into(),
                16,
                "10.1.0.0/16".into()
            ))
        );
    }
}
