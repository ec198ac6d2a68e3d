//! CIDR ranges (`gateway::syntax::cidr::Cidr`), as written under a listener's
//! `trusted_proxies`.
//!
//! Properties: parsing never panics; a range that parses prints in a form that parses
//! back to the same range, contains its own network address, and the range written
//! without a prefix is the single host.
#![no_main]

use std::net::IpAddr;

use gateway::syntax::cidr::Cidr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(cidr) = text.parse::<Cidr>() else {
        return;
    };
    let printed = cidr.to_string();
    assert_eq!(
        printed.parse::<Cidr>().ok(),
        Some(cidr),
        "{text:?} -> {printed:?}"
    );
    let (network, prefix) = printed.split_once('/').expect("printed with a prefix");
    let network: IpAddr = network.parse().expect("printed network");
    assert!(
        cidr.contains(network),
        "{printed} does not contain its network"
    );
    let width = if network.is_ipv4() { "32" } else { "128" };
    if prefix == width {
        assert_eq!(network.to_string().parse::<Cidr>().ok(), Some(cidr));
    }
});
