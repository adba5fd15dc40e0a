//! Passwords: argon2id hashes (PHC strings) and generated one-time passwords.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;

use crate::core::secret::Secret;

/// Alphabet for generated passwords: lower-case letters and digits without look-alikes.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// An argon2id hash with the crate's default (OWASP-recommended) parameters and a random salt.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Whether `password` matches `phc` (constant time inside argon2). A corrupt hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A one-time password: 20 characters from a 31-letter alphabet, about 99 bits.
pub fn generate() -> Secret<String> {
    let mut rng = rand::rng();
    let chars: String = (0..20).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    Secret::new(format!("{}-{}-{}-{}", &chars[..5], &chars[5..10], &chars[10..15], &chars[15..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_reject() {
        let pw = generate();
        let h = hash(pw.expose()).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(pw.expose(), &h));
        assert!(!verify("wrong", &h));
        assert!(!verify(pw.expose(), "not a hash"));
    }
}
