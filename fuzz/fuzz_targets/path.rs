//! Path normalization (`gateway::syntax::path::normalize`): what routing and the
//! upstream see. The first byte picks the listener's policy, the rest is the request
//! target as it came off the wire.
//!
//! Properties: the normal form is a fixed point (normalizing it again changes
//! nothing), holds no `.` or `..` segment, holds only RFC 3986 path characters (escapes
//! upper-cased, none of an unreserved character, `%2F`/`%5C` only when kept, never
//! `%00`), keeps the query as written, and is a path-and-query the `http` crate takes
//! with the same path and query (the proxy rebuilds its URI from it).
#![no_main]

use gateway::syntax::path::{EncodedSlashes, PathPolicy, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, target)) = data.split_first() else {
        return;
    };
    let policy = PathPolicy {
        merge_slashes: flags & 1 != 0,
        encoded_slashes: if flags & 2 != 0 {
            EncodedSlashes::Keep
        } else {
            EncodedSlashes::Refuse
        },
    };
    let Ok(normalized) = normalize(target, policy) else {
        return;
    };
    if target == b"*" {
        assert_eq!(normalized, None);
        return;
    }
    let normal: &[u8] = normalized.as_deref().map_or(target, str::as_bytes);
    if let Some(out) = &normalized {
        assert_ne!(out.as_bytes(), target, "Some(..) must be a change");
        assert_eq!(
            normalize(out.as_bytes(), policy),
            Ok(None),
            "not idempotent: {:?} -> {out:?}",
            String::from_utf8_lossy(target)
        );
    }
    let (path, query) = match normal.iter().position(|&b| b == b'?') {
        Some(at) => normal.split_at(at),
        None => (normal, &b""[..]),
    };
    let target_query = target
        .iter()
        .position(|&b| b == b'?')
        .map_or(&b""[..], |at| &target[at..]);
    assert_eq!(query, target_query, "the query is passed on as written");
    check_path(path, policy);
    if normalized.is_some() {
        let text = std::str::from_utf8(normal).expect("normalized output is ASCII");
        let parsed = http::uri::PathAndQuery::try_from(text)
            .unwrap_or_else(|e| panic!("{text:?} is not a path-and-query for http: {e}"));
        assert_eq!(parsed.as_str(), text);
        assert_eq!(parsed.path().as_bytes(), path);
    }
});

fn check_path(path: &[u8], policy: PathPolicy) {
    assert_eq!(
        path.first(),
        Some(&b'/'),
        "{:?}",
        path.escape_ascii().to_string()
    );
    let show = || path.escape_ascii().to_string();
    for segment in path[1..].split(|&b| b == b'/') {
        assert!(
            segment != b"." && segment != b"..",
            "dot segment in {}",
            show()
        );
    }
    if policy.merge_slashes {
        assert!(!path.windows(2).any(|w| w == b"//"), "`//` in {}", show());
    }
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            let hex = path
                .get(i + 1..i + 3)
                .unwrap_or_else(|| panic!("cut escape in {}", show()));
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "escape not upper-case hex in {}",
                show()
            );
            let byte = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
                .unwrap_or_else(|_| panic!("bad escape in {}", show()));
            assert!(
                !is_unreserved(byte),
                "escaped unreserved byte in {}",
                show()
            );
            assert_ne!(byte, 0, "%00 in {}", show());
            if matches!(byte, b'/' | b'\\') {
                assert_eq!(policy.encoded_slashes, EncodedSlashes::Keep, "{}", show());
            }
            i += 3;
            continue;
        }
        assert!(
            is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b),
            "byte 0x{b:02x} in {}",
            show()
        );
        i += 1;
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}
