//! The device authorization grant (RFC 8628), free of HTTP: start a grant, let a person decide
//! it, and answer the client's polls with the RFC's errors until tokens are issued once.

use rand::Rng;
use thiserror::Error;

use super::{TokenPair, issue_pair};
use crate::core::clock::now;
use crate::core::ids::UserId;
use crate::core::secret::{self, Secret};
use crate::store::{DeviceGrant, GrantStatus, Store, StoreError};

/// Device and user codes live 15 minutes (`expires_in`).
pub(crate) const CODE_TTL_SECS: i64 = 900;
/// Minimum seconds between polls (`interval`); `slow_down` adds 5 (RFC 8628 section 3.5).
pub(crate) const POLL_INTERVAL_SECS: i64 = 5;
/// User-code alphabet: 20 consonants, no vowels (no words), no look-alikes (0/O, 1/I).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// What `POST /oauth/device` hands the client.
#[derive(Debug)]
pub(crate) struct DeviceStart {
    /// Secret the client polls with (stored hashed).
    pub(crate) device_code: Secret<String>,
    /// What the person types: 8 letters, `XXXX-XXXX` (about 34.6 bits; guessing is bounded by
    /// the 15-minute life, sign-in and the login rate limits).
    pub(crate) user_code: String,
    /// Seconds until both codes expire.
    pub(crate) expires_in: i64,
    /// Seconds between polls.
    pub(crate) interval: i64,
}

/// A poll that did not yield tokens: the RFC's error codes.
#[derive(Debug, Error)]
pub(crate) enum PollError {
    /// The person has not decided yet.
    #[error("authorization_pending")]
    AuthorizationPending,
    /// Polled faster than `interval`; the interval grew by 5 s.
    #[error("slow_down")]
    SlowDown,
    /// The person denied it.
    #[error("access_denied")]
    AccessDenied,
    /// The codes expired before approval.
    #[error("expired_token")]
    ExpiredToken,
    /// Unknown or already used device code.
    #[error("invalid_grant")]
    InvalidGrant,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a decision on the verification page failed.
#[derive(Debug, Error)]
pub(crate) enum DecideError {
    /// No grant has this code.
    #[error("no sign-in request has this code; check it and try again")]
    Unknown,
    /// It expired.
    #[error("this code has expired; run `cmdop login` again")]
    Expired,
    /// Someone already approved or denied it.
    #[error("this request was already answered")]
    AlreadyDecided,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn new_user_code() -> String {
    let mut rng = rand::rng();
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())] as char);
    }
    code
}

/// Canonical form of a typed user code: upper case, `XXXX-XXXX`, tolerant of spaces and
/// missing dashes.
pub(crate) fn normalize_user_code(typed: &str) -> String {
    let letters: String = typed.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect();
    match letters.len() {
        8 => format!("{}-{}", &letters[..4], &letters[4..]),
        _ => letters,
    }
}

/// Starts a grant for a client describing itself as `client_name` on `client_host`.
pub(crate) async fn start(store: &Store, client_name: &str, client_host: &str) -> Result<DeviceStart, StoreError> {
    let device_code = secret::new_token("cmdopd_");
    let user_code = new_user_code();
    let grant = DeviceGrant {
        device_code_hash: secret::hash_token(device_code.expose()),
        user_code: user_code.clone(),
        client_name: client_name.chars().take(80).collect(),
        client_host: client_host.chars().take(80).collect(),
        expires_at: now() + CODE_TTL_SECS,
        interval_secs: POLL_INTERVAL_SECS,
        last_poll_at: None,
        status: GrantStatus::Pending,
        user_id: None,
    };
    store.insert_grant(&grant).await?;
    Ok(DeviceStart { device_code, user_code, expires_in: CODE_TTL_SECS, interval: POLL_INTERVAL_SECS })
}

/// Answers one poll of the client.
pub(crate) async fn poll(store: &Store, device_code: &str) -> Result<TokenPair, PollError> {
    let hash = secret::hash_token(device_code);
    let grant = store.grant_by_device_code(&hash).await?.ok_or(PollError::InvalidGrant)?;
    let t = now();
    if grant.status == GrantStatus::Consumed {
        return Err(PollError::InvalidGrant);
    }
    if t >= grant.expires_at {
        return Err(PollError::ExpiredToken);
    }
    let too_soon = grant.last_poll_at.is_some_and(|last| t - last < grant.interval_secs);
    let interval = if too_soon { grant.interval_secs + 5 } else { grant.interval_secs };
    store.grant_polled(&hash, t, interval).await?;
    match grant.status {
        GrantStatus::Denied => Err(PollError::AccessDenied),
        GrantStatus::Pending if too_soon => Err(PollError::SlowDown),
        GrantStatus::Pending => Err(PollError::AuthorizationPending),
        GrantStatus::Approved => {
            let user = grant.user_id.ok_or(PollError::InvalidGrant)?;
            if !store.transition_grant(&hash, GrantStatus::Approved, GrantStatus::Consumed, None).await? {
                return Err(PollError::InvalidGrant);
            }
            let client = format!("{} on {}", grant.client_name, grant.client_host);
            Ok(issue_pair(store, user, &client).await?)
        }
        GrantStatus::Consumed => Err(PollError::InvalidGrant),
    }
}

/// The pending grant a person typed the code of.
pub(crate) async fn pending(store: &Store, user_code: &str) -> Result<DeviceGrant, DecideError> {
    let grant = store.grant_by_user_code(&normalize_user_code(user_code)).await?.ok_or(DecideError::Unknown)?;
    if now() >= grant.expires_at {
        return Err(DecideError::Expired);
    }
    if grant.status != GrantStatus::Pending {
        return Err(DecideError::AlreadyDecided);
    }
    Ok(grant)
}

/// Approves or denies the grant of `user_code` as `user`.
pub(crate) async fn decide(
    store: &Store,
    user_code: &str,
    user: UserId,
    approve: bool,
) -> Result<DeviceGrant, DecideError> {
    let grant = pending(store, user_code).await?;
    let to = if approve { GrantStatus::Approved } else { GrantStatus::Denied };
    if !store.transition_grant(&grant.device_code_hash, GrantStatus::Pending, to, Some(user)).await? {
        return Err(DecideError::AlreadyDecided);
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_unambiguous_and_normalize() {
        let code = new_user_code();
        assert_eq!(code.len(), 9);
        assert!(code.chars().all(|c| c == '-' || USER_CODE_ALPHABET.contains(&(c as u8))));
        assert_eq!(normalize_user_code("kdfg xrtq"), "KDFG-XRTQ");
        assert_eq!(normalize_user_code("KDFG-XRTQ"), "KDFG-XRTQ");
    }
}
