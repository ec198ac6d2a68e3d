//! gRPC over HTTP/2, as far as the gateway reads and writes it: status codes and their
//! names, which exchanges are gRPC, the `grpc-status` a call ended with, and the
//! percent-encoding `grpc-message` needs. No I/O; used by `config/`, the breaker's
//! classification and the answers the gateway writes itself.

use std::fmt;

/// A gRPC status code (0-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(u8);

/// The names gRPC gives its codes, by number.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl Code {
    pub const OK: Code = Code(0);
    pub const UNKNOWN: Code = Code(2);
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    pub const UNIMPLEMENTED: Code = Code(12);
    pub const INTERNAL: Code = Code(13);
    pub const UNAVAILABLE: Code = Code(14);

    pub const COUNT: usize = NAMES.len();

    pub fn new(code: u8) -> Option<Code> {
        (usize::from(code) < NAMES.len()).then_some(Code(code))
    }

    pub fn value(self) -> u8 {
        self.0
    }

    pub fn name(self) -> &'static str {
        NAMES[usize::from(self.0)]
    }

    /// A name (`UNAVAILABLE`, any case) or a number (`14`).
    pub fn parse(text: &str) -> Option<Code> {
        let text = text.trim();
        if let Ok(n) = text.parse::<u8>() {
            return Code::new(n);
        }
        NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(text))
            .and_then(|i| u8::try_from(i).ok())
            .map(Code)
    }

    /// The value of a `grpc-status` header or trailer. Anything but a number 0-16 is
    /// UNKNOWN, as gRPC clients read it.
    pub fn from_header(value: &[u8]) -> Code {
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<u8>().ok())
            .and_then(Code::new)
            .unwrap_or(Code::UNKNOWN)
    }

    pub fn all() -> impl Iterator<Item = Code> {
        (0..NAMES.len())
            .filter_map(|i| u8::try_from(i).ok())
            .map(Code)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a `content-type` is gRPC's: `application/grpc`, alone or followed by `+`
/// (a codec) or `;` (parameters).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const PREFIX: &[u8] = b"application/grpc";
    value.len() >= PREFIX.len()
        && value[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && matches!(value.get(PREFIX.len()), None | Some(b'+' | b';'))
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%` itself.
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_by_name_or_number_and_from_headers() {
        assert_eq!(Code::parse("unavailable"), Some(Code::UNAVAILABLE));
        assert_eq!(Code::parse("14"), Some(Code::UNAVAILABLE));
        assert_eq!(Code::parse("17"), None);
        assert_eq!(Code::parse("SOMETIMES"), None);
        assert_eq!(Code::from_header(b"4"), Code::DEADLINE_EXCEEDED);
        assert_eq!(Code::from_header(b"99"), Code::UNKNOWN);
        assert_eq!(Code::from_header(b" 4"), Code::UNKNOWN);
        assert_eq!(Code::all().count(), 17);
    }

    #[test]
    fn grpc_content_types_and_messages() {
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"Application/GRPC+proto"));
        assert!(is_grpc_content_type(b"application/grpc;charset=utf-8"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/json"));
        assert_eq!(
            encode_message("open: 50% failed\n"),
            "open: 50%25 failed%0A"
        );
        assert_eq!(encode_message("ünï"), "%C3%BCn%C3%AF");
    }
}
