//! Share-link tokens: mint and verify signed, self-contained tokens; pure (no network, no
//! database, no files: the server's `links::keys` keeps the key ring in the data folder).
//!
//! A token is one base64url string (no padding, so it is safe in a URL path segment) of
//! [`TOKEN_BYTES`] bytes:
//!
//! ```text
//! version u8 | key id u32 BE | link id 16 | machine id 16 | deadline i64 BE (unix s) | mode u8
//!   | nonce 16 | HMAC-SHA256(key, LABEL || every byte before the tag) 32
//! ```
//!
//! Verification runs in this order, cheapest and least secret first: parse (length, base64,
//! version) -> key id known -> MAC (constant time) -> deadline -> revocation set
//! ([`verify_link`]). Only opening a session goes on to the store row (max opens, target).
//! The store keeps [`crate::core::secret::hash_token`] of a token, never the token itself.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use rand::{RngCore, TryRngCore, rngs::OsRng};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::core::clock::rfc3339;
use crate::core::ids::{LinkId, MachineId};
use crate::core::secret::Secret;
use crate::core::sync;

/// Format version; bump it (and [`LABEL`]) when the layout changes.
const VERSION: u8 = 1;
/// Domain separation: a MAC made for anything else with the same key never verifies here.
const LABEL: &[u8] = b"cmdop-share-link-v1\0";
/// Random bytes per token: 128 bits, so a token cannot be rebuilt from ids shown in listings
/// and two links with equal fields still differ (and so do their hashes in the store).
const NONCE_BYTES: usize = 16;
/// Bytes covered by the MAC: version 1 + key id 4 + link id 16 + machine id 16 + deadline 8
/// + mode 1 + nonce.
const SIGNED_BYTES: usize = 1 + 4 + 16 + 16 + 8 + 1 + NONCE_BYTES;
/// Full, untruncated HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;
/// Decoded token size: 94 bytes.
pub const TOKEN_BYTES: usize = SIGNED_BYTES + TAG_BYTES;
/// Encoded token size: 126 base64url characters, no padding.
pub const TOKEN_CHARS: usize = (TOKEN_BYTES * 4).div_ceil(3);
/// What `decode_slice` wants room for (it reserves whole 3-byte groups): 96 bytes.
const DECODE_BUF_BYTES: usize = TOKEN_CHARS.div_ceil(4) * 3;
/// Secret key size: 256 bits from the OS RNG.
const KEY_BYTES: usize = 32;

const MODE_READ_ONLY: u8 = 1;

/// What a link lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkMode {
    /// Keystrokes reach the shell.
    ReadWrite,
    /// The viewer only watches: every browser input byte is dropped.
    ReadOnly,
}

/// What a valid token asserts. `deadline` is whole seconds: [`KeyRing::mint`] drops any
/// sub-second part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkClaims {
    /// The link's row in the store (and its key in the revocation set).
    pub link_id: LinkId,
    /// The machine the link opens.
    pub machine_id: MachineId,
    /// The link stops verifying at this instant.
    pub deadline: OffsetDateTime,
    /// Read-write or read-only.
    pub mode: LinkMode,
}

/// Why a token was refused. Messages are safe to show to the link's holder.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Wrong length, not base64url, or an unknown format version.
    #[error("this is not a valid share link")]
    Malformed,
    /// Signed with a key this server does not have (or no longer keeps).
    #[error("this share link is no longer valid")]
    UnknownKey,
    /// The MAC does not match: the token was altered or forged.
    #[error("this is not a valid share link")]
    BadSignature,
    /// The deadline has passed.
    #[error("this share link expired at {}", rfc3339(deadline.unix_timestamp()))]
    Expired {
        /// When it expired.
        deadline: OffsetDateTime,
    },
    /// Its owner revoked it.
    #[error("this share link was revoked")]
    Revoked,
}

/// Why a key ring could not be made, changed or read back from its serialised form.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The bytes are not a key ring this code understands, or a rotation is impossible.
    #[error("{0}")]
    Invalid(String),
    /// The operating system's random source failed.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// One signing key with its HMAC state already keyed: cloning that state per verification
/// skips hashing the key pads again (two of the five SHA-256 blocks a fresh HMAC would cost).
#[derive(Clone)]
struct Key {
    secret: Secret<[u8; KEY_BYTES]>,
    mac: Hmac<Sha256>,
    /// `None` while current; once retired, the key verifies until this instant.
    verify_until: Option<OffsetDateTime>,
}

impl Key {
    fn new(secret: [u8; KEY_BYTES], verify_until: Option<OffsetDateTime>) -> Result<Self, KeyError> {
        let mac = Hmac::<Sha256>::new_from_slice(&secret).map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(Self { secret: Secret::new(secret), mac, verify_until })
    }

    fn random() -> Result<Self, KeyError> {
        let mut bytes = [0u8; KEY_BYTES];
        OsRng.try_fill_bytes(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Self::new(bytes, None)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("secret", &self.secret)
            .field("verify_until", &self.verify_until)
            .finish_non_exhaustive()
    }
}

/// The link-signing keys: one current key that mints, and retired keys that still verify the
/// links they signed until `verify_until`. Held in memory; [`KeyRing::to_json`] and
/// [`KeyRing::from_json`] are its stored form.
#[derive(Clone, Debug)]
pub struct KeyRing {
    current_id: u32,
    current: Key,
    retired: BTreeMap<u32, Key>,
}

/// Serialised form of [`KeyRing`].
#[derive(Serialize, Deserialize)]
struct KeyRingRepr {
    current: u32,
    keys: Vec<KeyRepr>,
}

#[derive(Serialize, Deserialize)]
struct KeyRepr {
    id: u32,
    /// base64url, no padding.
    secret: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    verify_until: Option<OffsetDateTime>,
}

impl KeyRing {
    /// A fresh ring with one new key (id 1).
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self { current_id: 1, current: Key::random()?, retired: BTreeMap::new() })
    }

    /// Adds a new key and makes it current; returns its id. The old current key keeps
    /// verifying until `now + max_ttl` (`max_ttl` being the longest TTL a link may be given)
    /// and keys already past their `verify_until` are dropped. On error `self` is unchanged.
    pub fn rotate(&mut self, now: OffsetDateTime, max_ttl: Duration) -> Result<u32, KeyError> {
        let invalid = |reason: &str| KeyError::Invalid(reason.to_owned());
        let last_id = self.retired.keys().copied().chain([self.current_id]).max();
        let new_id = last_id.and_then(|id| id.checked_add(1)).ok_or_else(|| invalid("key ids exhausted"))?;
        let verify_until = now.checked_add(max_ttl).ok_or_else(|| invalid("max_ttl out of range"))?;
        let mut old = std::mem::replace(&mut self.current, Key::random()?);
        old.verify_until = Some(verify_until);
        self.retired.insert(self.current_id, old);
        self.current_id = new_id;
        self.prune(now);
        Ok(new_id)
    }

    /// The id new links are signed with.
    pub fn current_key_id(&self) -> u32 {
        self.current_id
    }

    /// Signs `claims` with the current key. Sub-second parts of the deadline are dropped.
    pub fn mint(&self, claims: &LinkClaims) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let fields: [&[u8]; 7] = [
            &[VERSION],
            &self.current_id.to_be_bytes(),
            claims.link_id.0.as_bytes(),
            claims.machine_id.0.as_bytes(),
            &claims.deadline.unix_timestamp().to_be_bytes(),
            &[mode_byte(claims.mode)],
            &nonce,
        ];
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        for field in fields {
            bytes.extend_from_slice(field);
        }
        let tag = keyed_mac(&self.current, &bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks a token: parse -> key id known -> MAC (constant time) -> deadline, in that
    /// order. Does not consult revocations; [`verify_link`] does. Allocates nothing.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<LinkClaims, LinkError> {
        let bytes = decode(token)?;
        let (signed, tag) = bytes.split_at(SIGNED_BYTES);
        let mut reader = Reader(signed);
        let [_version] = reader.take()?;
        let key_id = u32::from_be_bytes(reader.take()?);
        let key = self.key(key_id, now).ok_or(LinkError::UnknownKey)?;
        keyed_mac(key, signed).verify_slice(tag).map_err(|_| LinkError::BadSignature)?;
        let claims = LinkClaims {
            link_id: LinkId(Uuid::from_bytes(reader.take()?)),
            machine_id: MachineId(Uuid::from_bytes(reader.take()?)),
            deadline: OffsetDateTime::from_unix_timestamp(i64::from_be_bytes(reader.take()?))
                .map_err(|_| LinkError::Malformed)?,
            mode: match reader.take::<1>()? {
                [0] => LinkMode::ReadWrite,
                [MODE_READ_ONLY] => LinkMode::ReadOnly,
                _ => return Err(LinkError::Malformed),
            },
        };
        if now >= claims.deadline {
            return Err(LinkError::Expired { deadline: claims.deadline });
        }
        Ok(claims)
    }

    /// A key that may verify at `now`: the current one, or a retired one not yet past.
    fn key(&self, id: u32, now: OffsetDateTime) -> Option<&Key> {
        if id == self.current_id {
            return Some(&self.current);
        }
        self.retired.get(&id).filter(|k| k.verify_until.is_some_and(|t| now <= t))
    }

    /// Drops retired keys past their `verify_until`; true when any was dropped.
    pub fn prune(&mut self, now: OffsetDateTime) -> bool {
        let before = self.retired.len();
        self.retired.retain(|_, k| k.verify_until.is_some_and(|t| now <= t));
        self.retired.len() != before
    }

    /// The ring read back from [`KeyRing::to_json`]'s bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, KeyError> {
        let invalid = KeyError::Invalid;
        let repr: KeyRingRepr = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let mut current = None;
        let mut retired = BTreeMap::new();
        for k in repr.keys {
            let mut secret = [0u8; KEY_BYTES];
            let len = URL_SAFE_NO_PAD.decode_slice(&k.secret, &mut secret);
            if len != Ok(KEY_BYTES) {
                return Err(invalid(format!("key {} is not {KEY_BYTES} base64url bytes", k.id)));
            }
            let key = Key::new(secret, k.verify_until)?;
            let duplicate = if k.id == repr.current {
                current.replace(Key { verify_until: None, ..key }).is_some()
            } else if key.verify_until.is_none() {
                return Err(invalid(format!("retired key {} has no verify_until", k.id)));
            } else {
                retired.insert(k.id, key).is_some()
            };
            if duplicate {
                return Err(invalid(format!("key id {} appears twice", k.id)));
            }
        }
        let current = current.ok_or_else(|| invalid(format!("current key {} is missing", repr.current)))?;
        Ok(Self { current_id: repr.current, current, retired })
    }

    /// The ring as JSON (secrets in base64url): what `links::keys` writes to its 0600 file.
    pub fn to_json(&self) -> Result<Vec<u8>, KeyError> {
        let keys = self.retired.iter().chain([(&self.current_id, &self.current)]);
        let repr = KeyRingRepr {
            current: self.current_id,
            keys: keys
                .map(|(&id, k)| KeyRepr {
                    id,
                    secret: URL_SAFE_NO_PAD.encode(k.secret.expose()),
                    verify_until: k.verify_until,
                })
                .collect(),
        };
        serde_json::to_vec_pretty(&repr).map_err(|e| KeyError::Invalid(e.to_string()))
    }
}

fn mode_byte(mode: LinkMode) -> u8 {
    match mode {
        LinkMode::ReadWrite => 0,
        LinkMode::ReadOnly => MODE_READ_ONLY,
    }
}

/// The MAC state after `LABEL || signed`, ready to finalize or compare.
fn keyed_mac(key: &Key, signed: &[u8]) -> Hmac<Sha256> {
    let mut mac = key.mac.clone();
    mac.update(LABEL);
    mac.update(signed);
    mac
}

/// Length, base64url and version checks, into a stack buffer. The base64 engine refuses
/// non-zero trailing bits, so each byte string has exactly one accepted spelling.
fn decode(token: &str) -> Result<[u8; TOKEN_BYTES], LinkError> {
    if token.len() != TOKEN_CHARS {
        return Err(LinkError::Malformed);
    }
    let mut buf = [0u8; DECODE_BUF_BYTES];
    let len = URL_SAFE_NO_PAD.decode_slice(token, &mut buf).map_err(|_| LinkError::Malformed)?;
    let bytes = buf.first_chunk::<TOKEN_BYTES>().ok_or(LinkError::Malformed)?;
    if len != TOKEN_BYTES || bytes[0] != VERSION {
        return Err(LinkError::Malformed);
    }
    Ok(*bytes)
}

/// Reads fixed-size fields front to back without indexing (so without panics).
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], LinkError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(LinkError::Malformed)?;
        self.0 = rest;
        Ok(*head)
    }
}

/// Revoked links still before their deadline, in memory so verification needs no query.
///
/// The server's link registry keeps it current: at start it loads every revoked link whose
/// deadline has not passed, and it calls [`Revocations::revoke`] on each revocation. A std
/// `RwLock` suffices: every method holds it briefly and never across `.await`.
#[derive(Debug, Default)]
pub struct Revocations {
    revoked: RwLock<HashMap<LinkId, OffsetDateTime>>,
}

impl Revocations {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks a link revoked; `deadline` is the link's own, after which the entry is useless.
    pub fn revoke(&self, link_id: LinkId, deadline: OffsetDateTime) {
        sync::write(&self.revoked).insert(link_id, deadline);
    }

    /// Whether the link was revoked.
    pub fn is_revoked(&self, link_id: &LinkId) -> bool {
        sync::read(&self.revoked).contains_key(link_id)
    }

    /// Forgets links whose deadline has passed: the deadline check refuses them first.
    pub fn prune(&self, now: OffsetDateTime) {
        sync::write(&self.revoked).retain(|_, deadline| now < *deadline);
    }
}

/// The full check before a link page or socket is served: parse -> key id known -> MAC ->
/// deadline ([`KeyRing::verify`]) -> revocation set. Opening a session then checks the
/// store row (max opens, target session).
pub fn verify_link(
    keys: &KeyRing,
    revocations: &Revocations,
    token: &str,
    now: OffsetDateTime,
) -> Result<LinkClaims, LinkError> {
    let claims = keys.verify(token, now)?;
    if revocations.is_revoked(&claims.link_id) {
        return Err(LinkError::Revoked);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{Result, ensure};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

    fn claims(mode: LinkMode) -> LinkClaims {
        LinkClaims {
            link_id: LinkId::random(),
            machine_id: MachineId::random(),
            deadline: T0 + Duration::hours(1),
            mode,
        }
    }

    fn refused_without_revealing(result: Result<LinkClaims, LinkError>) -> bool {
        matches!(result, Err(LinkError::Malformed | LinkError::UnknownKey | LinkError::BadSignature))
    }

    /// The ring as a restart would read it back.
    fn reloaded(ring: &KeyRing) -> Result<KeyRing> {
        Ok(KeyRing::from_json(&ring.to_json()?)?)
    }

    #[test]
    fn minted_token_verifies_to_its_claims() -> Result<()> {
        let ring = KeyRing::generate()?;
        for mode in [LinkMode::ReadWrite, LinkMode::ReadOnly] {
            let c = claims(mode);
            let token = ring.mint(&c);
            ensure!(token.len() == TOKEN_CHARS);
            ensure!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            ensure!(ring.verify(&token, T0)? == c);
        }
        Ok(())
    }

    #[test]
    fn same_claims_mint_different_tokens() -> Result<()> {
        let ring = KeyRing::generate()?;
        let c = claims(LinkMode::ReadWrite);
        ensure!(ring.mint(&c) != ring.mint(&c));
        Ok(())
    }

    #[test]
    fn flipping_any_bit_never_verifies() -> Result<()> {
        let ring = KeyRing::generate()?;
        let bytes = URL_SAFE_NO_PAD.decode(ring.mint(&claims(LinkMode::ReadOnly)))?;
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[i] ^= 1 << bit;
                let result = ring.verify(&URL_SAFE_NO_PAD.encode(&tampered), T0);
                ensure!(refused_without_revealing(result), "byte {i} bit {bit}: {result:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn replacing_any_char_never_verifies() -> Result<()> {
        let ring = KeyRing::generate()?;
        let token = ring.mint(&claims(LinkMode::ReadWrite));
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. %";
        for (i, original) in token.char_indices() {
            for c in alphabet.chars().filter(|&c| c != original) {
                let mut tampered = token.clone();
                tampered.replace_range(i..=i, c.encode_utf8(&mut [0; 4]));
                let result = ring.verify(&tampered, T0);
                ensure!(refused_without_revealing(result), "char {i} -> {c}: {result:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn wrong_length_is_malformed() -> Result<()> {
        let ring = KeyRing::generate()?;
        let token = ring.mint(&claims(LinkMode::ReadWrite));
        for bad in ["", &token[1..], &format!("{token}A"), &format!("{token}==")] {
            ensure!(ring.verify(bad, T0) == Err(LinkError::Malformed));
        }
        Ok(())
    }

    #[test]
    fn token_at_or_past_its_deadline_is_expired() -> Result<()> {
        let ring = KeyRing::generate()?;
        let c = claims(LinkMode::ReadWrite);
        let token = ring.mint(&c);
        ensure!(ring.verify(&token, c.deadline - Duration::seconds(1)).is_ok());
        for now in [c.deadline, c.deadline + Duration::days(1)] {
            ensure!(ring.verify(&token, now) == Err(LinkError::Expired { deadline: c.deadline }));
        }
        Ok(())
    }

    #[test]
    fn mint_drops_sub_seconds() -> Result<()> {
        let ring = KeyRing::generate()?;
        let mut c = claims(LinkMode::ReadWrite);
        c.deadline += Duration::milliseconds(750);
        let got = ring.verify(&ring.mint(&c), T0)?;
        ensure!(got.deadline == c.deadline.replace_millisecond(0)?);
        Ok(())
    }

    #[test]
    fn revoked_link_is_refused_until_pruned() -> Result<()> {
        let ring = KeyRing::generate()?;
        let revocations = Revocations::new();
        let (c, other) = (claims(LinkMode::ReadWrite), claims(LinkMode::ReadWrite));
        let (token, other_token) = (ring.mint(&c), ring.mint(&other));
        ensure!(verify_link(&ring, &revocations, &token, T0)? == c);
        revocations.revoke(c.link_id, c.deadline);
        ensure!(verify_link(&ring, &revocations, &token, T0) == Err(LinkError::Revoked));
        ensure!(verify_link(&ring, &revocations, &other_token, T0)? == other);
        revocations.prune(T0);
        ensure!(revocations.is_revoked(&c.link_id));
        revocations.prune(c.deadline);
        ensure!(!revocations.is_revoked(&c.link_id));
        Ok(())
    }

    #[test]
    fn key_id_this_ring_lacks_is_unknown() -> Result<()> {
        let mut rotated = KeyRing::generate()?;
        rotated.rotate(T0, Duration::days(1))?;
        let fresh = KeyRing::generate()?;
        let token = rotated.mint(&claims(LinkMode::ReadWrite));
        ensure!(fresh.verify(&token, T0) == Err(LinkError::UnknownKey));
        // Same key id, different secret: the MAC says no.
        let token = KeyRing::generate()?.mint(&claims(LinkMode::ReadWrite));
        ensure!(fresh.verify(&token, T0) == Err(LinkError::BadSignature));
        Ok(())
    }

    #[test]
    fn rotation_keeps_old_links_and_signs_new_ones_with_the_new_key() -> Result<()> {
        let mut ring = KeyRing::generate()?;
        let (old_claims, new_claims) = (claims(LinkMode::ReadWrite), claims(LinkMode::ReadOnly));
        let old = ring.mint(&old_claims);
        ensure!(ring.rotate(T0, Duration::days(1))? == 2);
        ensure!(ring.current_key_id() == 2);
        let new = ring.mint(&new_claims);
        ensure!(URL_SAFE_NO_PAD.decode(&new)?[1..5] == 2u32.to_be_bytes());
        let reloaded = reloaded(&ring)?;
        for r in [&ring, &reloaded] {
            ensure!(r.verify(&old, T0)? == old_claims);
            ensure!(r.verify(&new, T0)? == new_claims);
        }
        Ok(())
    }

    #[test]
    fn keys_past_verify_until_stop_verifying_and_are_pruned() -> Result<()> {
        let mut ring = KeyRing::generate()?;
        let mut c = claims(LinkMode::ReadWrite);
        c.deadline = T0 + Duration::days(30); // longer than max_ttl allowed: cut at verify_until
        let old = ring.mint(&c);
        ring.rotate(T0, Duration::hours(1))?;
        let late = T0 + Duration::hours(2);
        ensure!(ring.verify(&old, late) == Err(LinkError::UnknownKey));
        let mut reloaded = reloaded(&ring)?;
        ensure!(reloaded.prune(late));
        ensure!(reloaded.retired.is_empty());
        ensure!(reloaded.verify(&old, T0) == Err(LinkError::UnknownKey));
        ring.rotate(late, Duration::hours(1))?;
        ensure!(ring.retired.keys().copied().collect::<Vec<_>>() == [2]);
        ensure!(ring.verify(&old, T0) == Err(LinkError::UnknownKey));
        Ok(())
    }

    #[test]
    fn bytes_that_are_no_key_ring_are_invalid() -> Result<()> {
        for text in ["not json", r#"{"current":1,"keys":[]}"#, r#"{"current":1,"keys":[{"id":1,"secret":"AAAA"}]}"#] {
            let result = KeyRing::from_json(text.as_bytes());
            ensure!(matches!(result, Err(KeyError::Invalid(_))), "{text}: {result:?}");
        }
        Ok(())
    }

    #[test]
    fn debug_output_hides_key_bytes() -> Result<()> {
        let mut ring = KeyRing::generate()?;
        ring.rotate(T0, Duration::days(1))?;
        let debug = format!("{ring:?} {ring:#?}");
        for key in [&ring.current].into_iter().chain(ring.retired.values()) {
            let secret = *key.secret.expose();
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            for shown in [format!("{secret:?}"), hex, URL_SAFE_NO_PAD.encode(secret)] {
                ensure!(!debug.contains(&shown[..16]), "Debug leaks key bytes: {debug}");
            }
        }
        ensure!(debug.contains("<secret>"));
        Ok(())
    }

    #[test]
    fn token_hash_is_lowercase_hex_sha256() -> Result<()> {
        // The store keeps this hash of every link token: it must never change.
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        ensure!(crate::core::secret::hash_token("abc") == expected);
        Ok(())
    }

    #[test]
    fn errors_read_well() -> Result<()> {
        let expired = LinkError::Expired { deadline: T0 }.to_string();
        ensure!(expired == "this share link expired at 2030-01-01T00:00:00Z", "{expired}");
        Ok(())
    }
}
