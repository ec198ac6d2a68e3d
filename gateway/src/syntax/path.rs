//! Request path normalization, so that the route that matches is the route the upstream
//! serves: what one hop calls `/api/public/../internal` the next resolves to
//! `/internal`. Before routing, the path is brought to one form and both routing and the
//! upstream see that form:
//!
//! - percent-encoded unreserved characters are decoded (`%7E` → `~`, `%2e` → `.`), the
//!   hex of every other escape is upper-cased (RFC 3986 §6.2.2);
//! - dot segments are removed (§5.2.4); a `..` that would climb above the root is
//!   refused, as nginx does;
//! - with `merge_slashes`, runs of `/` become one;
//! - `%2F` and `%5C` (an encoded `/` or `\`) are refused unless the listener keeps them
//!   opaque; `%00` is always refused;
//! - any byte RFC 3986 does not allow in a path (space, `"`, `\`, `<`, controls,
//!   non-ASCII, ...) is refused. The query is passed on as written, but may only hold
//!   visible ASCII other than `"`, `<` and `>`.

use super::{hex_value, is_sub_delim, is_unreserved};

/// What a listener does with the parts of a path that are a matter of policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathPolicy {
    pub merge_slashes: bool,
    pub encoded_slashes: EncodedSlashes,
}

/// `%2F` and `%5C` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodedSlashes {
    /// 400: an upstream may decode them into separators after routing.
    #[default]
    Refuse,
    /// Passed on as opaque characters of their segment (upper-cased hex).
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target is not a path starting with /")]
    NotOriginForm,
    #[error("byte 0x{0:02x} is not allowed in a path")]
    Character(u8),
    #[error("byte 0x{0:02x} is not allowed in a query")]
    QueryCharacter(u8),
    #[error("malformed percent-encoding in the path")]
    PercentEncoding,
    #[error("an encoded slash or backslash (%2F, %5C) in the path")]
    EncodedSlash,
    #[error("an encoded NUL (%00) in the path")]
    EncodedNul,
    #[error("a .. segment climbs above the root")]
    AboveRoot,
}

/// The normalized form of an origin-form target (`/path?query`) or `*`; `None` when it
/// is already normal (the common case allocates nothing).
pub fn normalize(target: &[u8], policy: PathPolicy) -> Result<Option<String>, PathError> {
    if target == b"*" {
        return Ok(None);
    }
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(at) => target.split_at(at),
        None => (target, &b""[..]),
    };
    // `"`, `<` and `>` are visible but outside RFC 3986, and the `http` crate (so
    // Pingora, and the URI the proxy rebuilds) refuses them in a query.
    if let Some(&bad) = query[1.min(query.len())..]
        .iter()
        .find(|&&b| !(0x21..=0x7e).contains(&b) || matches!(b, b'#' | b'"' | b'<' | b'>'))
    {
        return Err(PathError::QueryCharacter(bad));
    }
    if path.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if !needs_rewrite(path, policy)? {
        return Ok(None);
    }
    let decoded = decode(path, policy)?;
    let segments = remove_dot_segments(&decoded, policy.merge_slashes)?;
    let mut out = String::with_capacity(target.len());
    for segment in &segments {
        out.push('/');
        // Only ASCII went into `decoded`.
        out.push_str(&String::from_utf8_lossy(segment));
    }
    if out.is_empty() {
        out.push('/');
    }
    out.push_str(&String::from_utf8_lossy(query));
    Ok((out.as_bytes() != target).then_some(out))
}

fn is_path_char(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || matches!(b, b':' | b'@' | b'/')
}

/// Checks every byte, and says whether the path needs the slow path: an escape, a dot
/// segment, or (when merging) an empty segment.
fn needs_rewrite(path: &[u8], policy: PathPolicy) -> Result<bool, PathError> {
    let mut rewrite = false;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' => rewrite = true,
            b'.' if path[i - 1] == b'/' => rewrite = true,
            b'/' if policy.merge_slashes && path.get(i + 1) == Some(&b'/') => rewrite = true,
            _ if !is_path_char(b) => return Err(PathError::Character(b)),
            _ => {}
        }
    }
    Ok(rewrite)
}

/// Decodes escapes of unreserved characters; keeps every other escape, upper-cased.
fn decode(path: &[u8], policy: PathPolicy) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            path.get(i + 1).copied().and_then(hex_value),
            path.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::PercentEncoding);
        };
        let byte = hi << 4 | lo;
        match byte {
            0 => return Err(PathError::EncodedNul),
            b'/' | b'\\' if policy.encoded_slashes == EncodedSlashes::Refuse => {
                return Err(PathError::EncodedSlash);
            }
            _ if is_unreserved(byte) => out.push(byte),
            _ => out.extend_from_slice(format!("%{byte:02X}").as_bytes()),
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 over a path that starts with `/`, as a list of segments.
fn remove_dot_segments(path: &[u8], merge_slashes: bool) -> Result<Vec<&[u8]>, PathError> {
    let parts: Vec<&[u8]> = path[1..].split(|&b| b == b'/').collect();
    let last = parts.len() - 1;
    let mut out: Vec<&[u8]> = Vec::with_capacity(parts.len());
    for (i, segment) in parts.into_iter().enumerate() {
        match segment {
            b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            b"" if merge_slashes && i != last => {}
            _ => {
                out.push(segment);
                continue;
            }
        }
        // A path ending in a dot segment names a directory: keep its trailing slash.
        if i == last {
            out.push(b"");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(target: &str) -> Result<String, PathError> {
        normalize(target.as_bytes(), PathPolicy::default())
            .map(|n| n.unwrap_or_else(|| target.to_string()))
    }

    #[test]
    fn normal_paths_are_left_alone_without_allocating() {
        for target in [
            "/",
            "/api/v1/orders?id=7&x=%20",
            "/a:b@c/d;e=f",
            "*",
            "/.well-known/x",
            "/a./b..",
        ] {
            assert_eq!(
                normalize(target.as_bytes(), PathPolicy::default()),
                Ok(None),
                "{target}"
            );
        }
    }

    #[test]
    fn dot_segments_cannot_escape_a_prefix() {
        assert_eq!(norm("/api/public/../internal"), Ok("/api/internal".into()));
        assert_eq!(
            norm("/api/public/%2e%2e/internal"),
            Ok("/api/internal".into())
        );
        assert_eq!(
            norm("/api/public/%2E%2e/internal?q=1"),
            Ok("/api/internal?q=1".into())
        );
        assert_eq!(norm("/a/./b/."), Ok("/a/b/".into()));
        assert_eq!(norm("/a/b/.."), Ok("/a/".into()));
        assert_eq!(norm("/a/.."), Ok("/".into()));
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/../../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(norm("/%2e%2e/x"), Err(PathError::AboveRoot));
    }

    #[test]
    fn escapes_are_brought_to_one_form() {
        assert_eq!(norm("/%7euser/%41%62"), Ok("/~user/Ab".into()));
        assert_eq!(norm("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/a%5Cb"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/a%00b"), Err(PathError::EncodedNul));
        assert_eq!(norm("/a%zz"), Err(PathError::PercentEncoding));
        assert_eq!(norm("/a%2"), Err(PathError::PercentEncoding));
        assert_eq!(norm("/caf%c3%a9"), Ok("/caf%C3%A9".into()));
        let keep = PathPolicy {
            encoded_slashes: EncodedSlashes::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(
            normalize(b"/a%2fb/../c", keep),
            Ok(Some("/c".into())),
            "an encoded slash is part of its segment"
        );
        assert_eq!(normalize(b"/a%2fb/c", keep), Ok(Some("/a%2Fb/c".into())));
        assert_eq!(normalize(b"/a%00", keep), Err(PathError::EncodedNul));
    }

    #[test]
    fn slashes_merge_only_when_asked() {
        assert_eq!(norm("//a//b/"), Ok("//a//b/".into()));
        let merge = PathPolicy {
            merge_slashes: true,
            ..PathPolicy::default()
        };
        assert_eq!(normalize(b"//a//b//", merge), Ok(Some("/a/b/".into())));
        assert_eq!(normalize(b"/a//../b", merge), Ok(Some("/b".into())));
    }

    #[test]
    fn bytes_outside_the_grammar_are_refused() {
        for (target, byte) in [
            ("/a b", b' '),
            ("/a\\b", b'\\'),
            ("/a\"b", b'"'),
            ("/a<b", b'<'),
            ("/a\tb", b'\t'),
            ("/caf\u{e9}", 0xc3),
        ] {
            assert_eq!(norm(target), Err(PathError::Character(byte)), "{target}");
        }
        assert_eq!(norm("/a?b c"), Err(PathError::QueryCharacter(b' ')));
        assert_eq!(norm("/a?b#c"), Err(PathError::QueryCharacter(b'#')));
        // Found by fuzz/ (target `path`): a rewritten path with one of these in its
        // query was not a URI the proxy could rebuild.
        for (target, byte) in [
            ("/api/public/%2e%2e/internal?a<1", b'<'),
            ("/a?b>c", b'>'),
            ("/a/./b?q=\"x\"", b'"'),
        ] {
            assert_eq!(
                norm(target),
                Err(PathError::QueryCharacter(byte)),
                "{target}"
            );
        }
        assert_eq!(norm("a/b"), Err(PathError::NotOriginForm));
        assert_eq!(norm(""), Err(PathError::NotOriginForm));
    }
}
