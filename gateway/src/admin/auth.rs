//! Bearer-token check for the admin API, in constant time.

use sha2::{Digest, Sha256};

/// Whether `header` (the Authorization value) carries `token`. Both sides are hashed
/// first, so the comparison takes the same time whatever the input's length or content.
pub fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    let presented = header
        .and_then(|h| h.strip_prefix(b"Bearer "))
        .unwrap_or_default();
    let a = Sha256::digest(presented);
    let b = Sha256::digest(token.as_bytes());
    let differences = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    differences == 0 && !presented.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = "s3cret-token-0123456789";
        assert!(authorized(Some(b"Bearer s3cret-token-0123456789"), token));
        assert!(!authorized(Some(b"Bearer s3cret-token-012345678"), token));
        assert!(!authorized(Some(b"s3cret-token-0123456789"), token));
        assert!(!authorized(Some(b"Bearer "), token));
        assert!(!authorized(None, token));
    }
}
