//! The grammar of the parts of a request that a client controls and that decide where
//! it goes: the authority (RFC 3986 §3.2, RFC 9110 §7.2), the path (RFC 3986 §5.2.4 and
//! §6.2.2), the `Forwarded` header (RFC 7239), and the CIDR ranges that say whose
//! forwarding headers are believed. Pure functions over bytes: no I/O, no Pingora, so
//! the proxy, routing and config all build on them and `fuzz/` drives them directly.

pub mod authority;
pub mod cidr;
pub mod forwarded;
pub mod path;

/// RFC 3986 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims`.
fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// RFC 9110 `tchar`, the characters of a `token`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// The value of one hexadecimal digit.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
