//! RFC 7239 `Forwarded`: checking a value a trusted proxy sent before appending to it,
//! and writing the gateway's own element so that no byte of it can be read as another
//! element or parameter (values are tokens or quoted strings with `"` and `\` escaped;
//! IPv6 addresses are bracketed and quoted, §6).

use std::net::IpAddr;

use super::is_tchar;

/// Whether `value` is a well-formed `Forwarded` field value:
/// `1#forwarded-element`, each `[pair] *( ";" [pair] )`, `pair = token "=" value`,
/// `value = token / quoted-string`. Visible ASCII only (no obs-text).
pub fn is_valid(value: &[u8]) -> bool {
    let mut i = 0;
    let mut elements = 0;
    loop {
        skip_ows(value, &mut i);
        // One element: pairs separated by ';' (each may be empty).
        loop {
            skip_ows(value, &mut i);
            if value.get(i).is_some_and(|&b| is_tchar(b)) {
                while value.get(i).is_some_and(|&b| is_tchar(b)) {
                    i += 1;
                }
                if value.get(i) != Some(&b'=') {
                    return false;
                }
                i += 1;
                if !pair_value(value, &mut i) {
                    return false;
                }
            }
            skip_ows(value, &mut i);
            if value.get(i) == Some(&b';') {
                i += 1;
            } else {
                break;
            }
        }
        elements += 1;
        match value.get(i) {
            None => return elements > 0 && !value.is_empty(),
            Some(b',') => i += 1,
            Some(_) => return false,
        }
    }
}

fn skip_ows(value: &[u8], i: &mut usize) {
    while matches!(value.get(*i), Some(b' ' | b'\t')) {
        *i += 1;
    }
}

/// A token or a quoted-string starting at `i`; moves past it.
fn pair_value(value: &[u8], i: &mut usize) -> bool {
    match value.get(*i) {
        Some(b'"') => {
            *i += 1;
            loop {
                match value.get(*i) {
                    Some(b'"') => {
                        *i += 1;
                        return true;
                    }
                    Some(b'\\') => match value.get(*i + 1) {
                        Some(&b) if is_qdtext_or_pair(b) => *i += 2,
                        _ => return false,
                    },
                    Some(&b) if is_qdtext_or_pair(b) => *i += 1,
                    _ => return false,
                }
            }
        }
        Some(&b) if is_tchar(b) => {
            while value.get(*i).is_some_and(|&b| is_tchar(b)) {
                *i += 1;
            }
            true
        }
        _ => false,
    }
}

/// The gateway's own element: `for=`, `proto=` and, when known, `host=`. A host that
/// no quoted-string can carry (a control byte, non-ASCII) is left out rather than
/// written as something `is_valid` refuses.
pub fn element(client: Option<IpAddr>, proto: &str, host: Option<&str>) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("for=");
    match client {
        Some(IpAddr::V4(v4)) => out.push_str(&v4.to_string()),
        Some(IpAddr::V6(v6)) => push_value(&mut out, &format!("[{v6}]")),
        None => out.push_str("unknown"),
    }
    out.push_str(";proto=");
    push_value(&mut out, proto);
    if let Some(host) = host.filter(|h| h.bytes().all(is_qdtext_or_pair)) {
        out.push_str(";host=");
        push_value(&mut out, host);
    }
    out
}

/// A byte a quoted-string may hold, escaped or not: HTAB, SP and visible ASCII (the
/// obs-text that RFC 9110 still allows is refused by `is_valid`, so never written).
fn is_qdtext_or_pair(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b)
}

/// A token when it is one, otherwise a quoted-string with `"` and `\` escaped.
fn push_value(out: &mut String, value: &str) {
    if !value.is_empty() && value.bytes().all(is_tchar) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_tokens_or_escaped_quoted_strings() {
        assert_eq!(
            element(
                Some("192.0.2.1".parse().expect("ip")),
                "https",
                Some("api.example.com")
            ),
            "for=192.0.2.1;proto=https;host=api.example.com"
        );
        assert_eq!(
            element(Some("::1".parse().expect("ip")), "http", Some("[::1]:8080")),
            "for=\"[::1]\";proto=http;host=\"[::1]:8080\""
        );
        assert_eq!(element(None, "http", None), "for=unknown;proto=http");
        // Whatever a host holds, the element stays one element.
        let hostile = element(None, "http", Some("x\", for=6.6.6.6;proto=https;a=\"\\"));
        assert_eq!(
            hostile,
            "for=unknown;proto=http;host=\"x\\\", for=6.6.6.6;proto=https;a=\\\"\\\\\""
        );
        assert!(is_valid(hostile.as_bytes()));
    }

    #[test]
    fn a_host_no_quoted_string_can_carry_is_left_out() {
        // Found by fuzz/ (target `forwarded`): such a host made an invalid element.
        for host in ["caf\u{e9}.example", "a\r\nx-evil: 1", "\u{0}", "a\u{7f}"] {
            let element = element(None, "https", Some(host));
            assert_eq!(element, "for=unknown;proto=https", "{host:?}");
            assert!(is_valid(element.as_bytes()));
        }
        assert_eq!(
            element(None, "http", Some("a b\tc")),
            "for=unknown;proto=http;host=\"a b\tc\""
        );
    }

    #[test]
    fn values_from_trusted_proxies_are_checked() {
        for good in [
            &b"for=192.0.2.60;proto=http;by=203.0.113.43"[..],
            b"for=\"[2001:db8:cafe::17]:4711\"",
            b"for=192.0.2.43, for=198.51.100.17",
            b"for=a ;  proto=https , for=b",
            b"for=\"a\\\"b\"",
            b";;for=a",
            // RFC 9110 §5.6.1: empty list elements are accepted and ignored.
            b"for=a,,",
        ] {
            assert!(is_valid(good), "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b""[..],
            b"for",
            b"for=",
            b"for=\"unterminated",
            b"for=a b",
            b"for=\"\x01\"",
            b"for=\"\\",
            b"=a",
            b"for=a\r\nx: y",
            b"for=\xff",
        ] {
            assert!(!is_valid(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
