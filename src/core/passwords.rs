//! Passwords: argon2id hashes (PHC strings) and generated one-time passwords.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::Rng;
use subtle::ConstantTimeEq;

use crate::core::secret::Secret;

/// Alphabet for generated passwords: lower-case letters and digits without look-alikes.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// An argon2id hash with the crate's default (OWASP-recommended) parameters and a random salt.
pub(crate) fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Whether `password` matches `phc` (constant time inside argon2). A corrupt hash never matches.
pub(crate) fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Most argon2 memory a stored hash may ask for: 64 MiB (ours use 19 MiB).
const MAX_MEMORY_KIB: u32 = 64 * 1024;

/// Checks `password` against `phc`, or, when there is no hash (an unknown account), against a
/// fixed dummy hash of the same cost: both answers take as long, so timing does not reveal
/// which accounts exist. Without a hash the answer is always false.
///
/// `memory` is argon2's working memory, kept by the caller between checks: allocating 19 MiB
/// per check left each freed block resident (the allocator keeps it), so memory grew with
/// every check.
pub(crate) fn verify_or_dummy(password: &str, phc: Option<&str>, memory: &mut Vec<Block>) -> bool {
    match phc {
        Some(phc) => verify_in(password, phc, memory),
        None => {
            let _ = verify_in(password, dummy_hash(), memory);
            false
        }
    }
}

/// `verify` in caller-kept memory. A corrupt or oversized hash never matches.
fn verify_in(password: &str, phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed)) else {
        return false;
    };
    let version = parsed.version.and_then(|v| Version::try_from(v).ok()).unwrap_or_default();
    if params.m_cost() > MAX_MEMORY_KIB {
        return false;
    }
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    let hashed = argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..]);
    hashed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// A hash of a random password nobody knows, made once with the same parameters as `hash`.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(generate().expose()).unwrap_or_default())
}

/// A one-time password: 20 characters from a 31-letter alphabet, about 99 bits.
pub(crate) fn generate() -> Secret<String> {
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

    #[test]
    fn an_unknown_account_is_checked_against_a_dummy_and_refused() {
        assert!(dummy_hash().starts_with("$argon2id$"));
        let mut memory = Vec::new();
        assert!(!verify_or_dummy("anything", None, &mut memory));
        let h = hash("right one").unwrap();
        assert!(verify_or_dummy("right one", Some(&h), &mut memory));
        assert!(!verify_or_dummy("wrong one", Some(&h), &mut memory));
        assert!(!verify_or_dummy("right one", Some("not a hash"), &mut memory));
    }
}
