//! The cluster key: random bytes every node of a deployment has (`--cluster-key-file`) and the
//! database does not. Two keys are derived from it, each for one purpose:
//! - the **peer key** authenticates node-to-node calls: a caller sends
//!   `<unix secs>.<hex HMAC-SHA256(peer key, label | node | secs)>`, accepted within a minute;
//!   the cluster key itself never crosses the network;
//! - the **seal key** encrypts the secrets nodes share through the database (link signing
//!   keys) with ChaCha20-Poly1305, so read access to the database alone mints no link.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{self, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Bytes of key material in a key file.
const KEY_BYTES: usize = 32;
/// What a key file starts with, so a wrong file is recognised as such.
const FILE_PREFIX: &str = "cmdop-cluster-key-v1:";
/// How far a peer call's timestamp may be from ours, seconds.
const PEER_SKEW_SECS: i64 = 60;

/// Why a key file, a peer credential or a sealed value was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ClusterKeyError {
    /// Not a key file made by `cmdop server cluster-key new`.
    #[error("not a cluster key file: make one with `cmdop server cluster-key new > FILE`")]
    Format,
    /// The system's random source failed.
    #[error("no randomness available")]
    Random,
    /// A sealed value did not decrypt: another cluster key, or tampered.
    #[error(
        "a shared secret in the database does not open with this cluster key: every node needs the same --cluster-key-file"
    )]
    Unseal,
}

/// The derived keys of one cluster key file.
pub(crate) struct ClusterKey {
    peer: [u8; KEY_BYTES],
    seal: LessSafeKey,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The text of a new key file.
    pub(crate) fn new_file() -> Result<String, ClusterKeyError> {
        let mut bytes = [0u8; KEY_BYTES];
        SystemRandom::new().fill(&mut bytes).map_err(|_| ClusterKeyError::Random)?;
        Ok(format!("{FILE_PREFIX}{}\n", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The keys of a key file's text.
    pub(crate) fn from_file(text: &str) -> Result<Self, ClusterKeyError> {
        let encoded = text.trim().strip_prefix(FILE_PREFIX).ok_or(ClusterKeyError::Format)?;
        let master = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| ClusterKeyError::Format)?;
        let master: [u8; KEY_BYTES] = master.try_into().map_err(|_| ClusterKeyError::Format)?;
        let seal = UnboundKey::new(&CHACHA20_POLY1305, &derive(&master, b"cmdop seal v1"))
            .map_err(|_| ClusterKeyError::Format)?;
        Ok(Self { peer: derive(&master, b"cmdop peer auth v1"), seal: LessSafeKey::new(seal) })
    }

    /// The credential `node` sends at `now` (unix seconds).
    pub(crate) fn peer_credential(&self, node: &str, now: i64) -> String {
        format!("{now}.{}", hex(&self.peer_mac(node, now)))
    }

    /// Whether `credential` proves `node` holds the cluster key, at `now`. Constant time in
    /// the MAC comparison.
    pub(crate) fn verify_peer(&self, node: &str, credential: &str, now: i64) -> bool {
        let Some((secs, mac)) = credential.split_once('.') else { return false };
        let Ok(secs) = secs.parse::<i64>() else { return false };
        if (now - secs).abs() > PEER_SKEW_SECS {
            return false;
        }
        hex(&self.peer_mac(node, secs)).as_bytes().ct_eq(mac.as_bytes()).into()
    }

    fn peer_mac(&self, node: &str, secs: i64) -> [u8; 32] {
        let mut mac = mac_with(&self.peer);
        mac.update(b"cmdop peer call v1\0");
        mac.update(node.as_bytes());
        mac.update(b"\0");
        mac.update(secs.to_string().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Encrypts `plain` under the seal key, bound to `label` (what the value is), as base64.
    pub(crate) fn seal(&self, label: &str, plain: &[u8]) -> Result<String, ClusterKeyError> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| ClusterKeyError::Random)?;
        let mut sealed = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aead::Aad::from(label), &mut sealed)
            .map_err(|_| ClusterKeyError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts what `seal` made with the same key and label.
    pub(crate) fn open(&self, label: &str, sealed: &str) -> Result<Vec<u8>, ClusterKeyError> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| ClusterKeyError::Unseal)?;
        if bytes.len() < aead::NONCE_LEN {
            return Err(ClusterKeyError::Unseal);
        }
        let (nonce, rest) = bytes.split_at(aead::NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| ClusterKeyError::Unseal)?;
        let mut rest = rest.to_vec();
        let plain =
            self.seal.open_in_place(nonce, aead::Aad::from(label), &mut rest).map_err(|_| ClusterKeyError::Unseal)?;
        Ok(plain.to_vec())
    }
}

/// HMAC-SHA256 under a 32-byte key (zero-padded to the block, as HMAC itself pads it).
fn mac_with(key: &[u8; KEY_BYTES]) -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    block[..KEY_BYTES].copy_from_slice(key);
    Hmac::<Sha256>::new(&block.into())
}

fn derive(master: &[u8; KEY_BYTES], label: &[u8]) -> [u8; KEY_BYTES] {
    let mut mac = mac_with(master);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::from_file(&ClusterKey::new_file().unwrap()).unwrap()
    }

    #[test]
    fn a_peer_credential_verifies_for_its_node_and_time_only() {
        let (k, other) = (key(), key());
        let cred = k.peer_credential("node-a", 1_000);
        assert!(k.verify_peer("node-a", &cred, 1_030));
        assert!(!k.verify_peer("node-b", &cred, 1_000), "bound to the node");
        assert!(!k.verify_peer("node-a", &cred, 1_100), "too old");
        assert!(!other.verify_peer("node-a", &cred, 1_000), "another cluster key");
        assert!(!k.verify_peer("node-a", "1000.00", 1_000));
        assert!(!k.verify_peer("node-a", "garbage", 1_000));
    }

    #[test]
    fn sealed_values_open_with_the_same_key_and_label_only() {
        let (k, other) = (key(), key());
        let sealed = k.seal("link-keys", b"secret ring").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(k.open("link-keys", &sealed).unwrap(), b"secret ring");
        assert_eq!(other.open("link-keys", &sealed), Err(ClusterKeyError::Unseal));
        assert_eq!(k.open("other", &sealed), Err(ClusterKeyError::Unseal));
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.open("link-keys", std::str::from_utf8(&tampered).unwrap()), Err(ClusterKeyError::Unseal));
    }

    #[test]
    fn a_wrong_file_is_a_format_error() {
        assert_eq!(ClusterKey::from_file("hello").unwrap_err(), ClusterKeyError::Format);
        assert_eq!(ClusterKey::from_file("cmdop-cluster-key-v1:AAAA").unwrap_err(), ClusterKeyError::Format);
    }
}
