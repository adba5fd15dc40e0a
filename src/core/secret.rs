//! Secrets: a redacting wrapper, random bearer tokens and their at-rest hashes.
//!
//! Every token that authenticates anything is made here, and only `hash_token` of it is stored.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A value whose `Debug` and `Display` never print it, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub(crate) fn new(value: T) -> Self {
        Self(value)
    }
    /// The secret itself; call sites are easy to audit.
    pub(crate) fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Prefixes say what a token is when it turns up in a terminal or a secret scanner.
pub(crate) mod prefix {
    /// OAuth access token (1 h).
    pub(crate) const ACCESS: &str = "cmdop_";
    /// OAuth refresh token (30 d, rotated on use).
    pub(crate) const REFRESH: &str = "cmdopr_";
    /// Machine credential held by an agent.
    pub(crate) const MACHINE: &str = "cmdopm_";
    /// One-time machine enrollment token.
    pub(crate) const ENROLL: &str = "cmdope_";
}

/// A new token: `prefix` + 256 random bits (32 bytes from the OS RNG), base64url.
pub(crate) fn new_token(prefix: &str) -> Secret<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The at-rest form of a token: lowercase hex SHA-256. Tokens carry 256 random bits, so an
/// unsalted fast hash is enough (nothing to brute-force), and lookups stay one indexed query.
pub(crate) fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "<secret>");
    }

    #[test]
    fn tokens_are_prefixed_unique_and_hashed() {
        let a = new_token(prefix::ACCESS);
        let b = new_token(prefix::ACCESS);
        assert!(a.expose().starts_with("cmdop_"));
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), "cmdop_".len() + 43);
        let h = hash_token(a.expose());
        assert_eq!(h.len(), 64);
        assert!(!h.contains(a.expose().as_str()));
    }
}
