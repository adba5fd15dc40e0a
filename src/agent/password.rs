//! The machine's attach password, kept and checked here only: the relay never sees the hash.
//!
//! `cmdop connect password set` (run on the machine) stores an argon2id hash and a fresh
//! *epoch* in the agent's state folder. An unlock with the right password yields an attach
//! token valid 24 h, bound to the principal that asked (`user:<id>`, `link:<id>`) and to the
//! epoch, so changing or clearing the password ends every token at once. Only SHA-256 hashes of
//! tokens are kept (`attach-tokens.json`), like every other token of the product. Wrong answers
//! back off exponentially per principal and per source, counted when the check starts. The files are read at every check, so
//! `password set` and `clear` take effect on a running agent without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::clock::now;
use crate::core::limiter::Limiter;
use crate::core::secret::{self, Secret};
use crate::core::session::{Denial, Grant};

/// How long an attach token works: 24 hours.
const TOKEN_TTL_SECS: i64 = 86_400;
/// Prefix of attach tokens, so one is recognisable in a terminal or a secret scanner.
const TOKEN_PREFIX: &str = "cmdopa_";
const PASSWORD_FILE: &str = "attach-password.json";
const TOKENS_FILE: &str = "attach-tokens.json";
/// Wrong answers that pass without delay, per principal and per source (an IP; a CLI user);
/// then 1 s, 2 s, 4 s … No machine-wide count: a stranger must not lock the owner out.
const FREE_PER_PRINCIPAL: u32 = 3;
const FREE_PER_SOURCE: u32 = 10;
/// Longest back-off: 15 minutes.
const BACKOFF_CAP: Duration = Duration::from_secs(900);

/// The stored password.
#[derive(Serialize, Deserialize)]
struct PasswordFile {
    /// argon2id PHC string.
    hash: String,
    /// Random; every token records the epoch it was issued in.
    epoch: String,
    /// When it was set (unix seconds).
    set_at: i64,
}

/// One issued token, stored under the SHA-256 of the token.
#[derive(Clone, Serialize, Deserialize)]
struct TokenEntry {
    principal: String,
    epoch: String,
    expires_unix: i64,
}

fn password_path(state_dir: &Path) -> PathBuf {
    state_dir.join(PASSWORD_FILE)
}

/// Sets (or replaces) the password; every token issued before stops working.
pub(crate) fn set(state_dir: &Path, password: &str) -> anyhow::Result<()> {
    let hash = crate::core::passwords::hash(password).map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    let epoch = secret::new_token("").expose().clone();
    let file = PasswordFile { hash, epoch, set_at: now() };
    crate::sys::private_file::remove(&state_dir.join(TOKENS_FILE))?;
    crate::sys::private_file::write(&password_path(state_dir), &serde_json::to_vec_pretty(&file)?)
}

/// Removes the password (and every token); true when there was one.
pub(crate) fn clear(state_dir: &Path) -> anyhow::Result<bool> {
    crate::sys::private_file::remove(&state_dir.join(TOKENS_FILE))?;
    crate::sys::private_file::remove(&password_path(state_dir))
}

/// When the password was set (unix seconds), if there is one.
pub(crate) fn status(state_dir: &Path) -> anyhow::Result<Option<i64>> {
    Ok(read_password(state_dir)?.map(|p| p.set_at))
}

fn read_password(state_dir: &Path) -> anyhow::Result<Option<PasswordFile>> {
    crate::sys::private_file::read_json(&password_path(state_dir), "run `cmdop connect password set` or `clear` again")
}

/// Checks sessions and unlocks against the machine's attach password. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    state_dir: PathBuf,
    /// Issued tokens by hash; mirrored to `attach-tokens.json` so a restart keeps them.
    tokens: Mutex<HashMap<String, TokenEntry>>,
    per_principal: Limiter,
    per_source: Limiter,
}

impl Gate {
    /// A gate over the password in `state_dir`.
    pub(crate) fn new(state_dir: &Path) -> Self {
        let tokens = crate::sys::private_file::read_json(&state_dir.join(TOKENS_FILE), "remove it")
            .ok()
            .flatten()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                state_dir: state_dir.to_path_buf(),
                tokens: Mutex::new(tokens),
                per_principal: Limiter::new(FREE_PER_PRINCIPAL, BACKOFF_CAP),
                per_source: Limiter::new(FREE_PER_SOURCE, BACKOFF_CAP),
            }),
        }
    }

    /// The current password, failing closed: a file that cannot be read protects the machine
    /// with a password nobody knows rather than opening it.
    fn password(&self) -> Result<Option<PasswordFile>, ()> {
        read_password(&self.inner.state_dir)
            .map_err(|e| tracing::error!(error = %format!("{e:#}"), "attach password unreadable; refusing sessions"))
    }

    /// The current password's epoch (`None`: no password); an unreadable file counts as a
    /// password nobody knows.
    pub(crate) fn epoch(&self) -> Option<String> {
        match self.password() {
            Ok(file) => file.map(|f| f.epoch),
            Err(()) => Some(String::new()),
        }
    }

    /// Whether a session may open: yes when the machine has no password, or the token is one
    /// this gate issued to `principal` under the current password and it has not expired. The
    /// epoch it was admitted under, so a later change of password can end it.
    pub(crate) fn admit(&self, principal: &str, token: &str) -> Result<Option<String>, Denial> {
        let epoch = match self.password() {
            Ok(None) => return Ok(None),
            Ok(Some(file)) => file.epoch,
            Err(()) => return Err(Denial::Required),
        };
        let tokens = crate::core::sync::lock(&self.inner.tokens);
        let valid = !token.is_empty()
            && tokens
                .get(&secret::hash_token(token))
                .is_some_and(|e| e.epoch == epoch && e.principal == principal && e.expires_unix > now());
        if valid { Ok(Some(epoch)) } else { Err(Denial::Required) }
    }

    /// Checks a typed password from `source`; a token for `principal` when it is right.
    pub(crate) async fn unlock(
        &self,
        principal: &str,
        source: &str,
        password: Secret<String>,
    ) -> Result<Grant, Denial> {
        let file = match self.password() {
            Ok(Some(file)) => file,
            // No password: nothing to unlock, any token would do; issue none and let it in.
            Ok(None) => {
                return Ok(Grant { token: Secret::new(String::new()), expires_unix: now() + TOKEN_TTL_SECS });
            }
            Err(()) => return Err(Denial::Wrong),
        };
        let (key, from) = (format!("principal:{principal}"), format!("source:{source}"));
        let inner = &self.inner;
        // Counted before the check: guesses sent at once cannot all be checked.
        if let Err(wait) = inner.per_principal.begin(&key).and_then(|()| inner.per_source.begin(&from)) {
            return Err(Denial::Throttled(wait));
        }
        let right = crate::sys::argon::verify(password, Some(file.hash.clone())).await;
        if !right {
            tracing::warn!(principal, source, "wrong attach password");
            return Err(Denial::Wrong);
        }
        inner.per_principal.succeeded(&key);
        inner.per_source.release(&from);
        self.issue(principal, &file.epoch).map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "cannot save the attach token");
            Denial::Wrong
        })
    }

    fn issue(&self, principal: &str, epoch: &str) -> anyhow::Result<Grant> {
        let token = secret::new_token(TOKEN_PREFIX);
        let expires_unix = now() + TOKEN_TTL_SECS;
        let mut tokens = crate::core::sync::lock(&self.inner.tokens);
        let t = now();
        tokens.retain(|_, e| e.expires_unix > t && e.epoch == epoch);
        let entry = TokenEntry { principal: principal.to_string(), epoch: epoch.to_string(), expires_unix };
        tokens.insert(secret::hash_token(token.expose()), entry);
        crate::sys::private_file::write(&self.inner.state_dir.join(TOKENS_FILE), &serde_json::to_vec(&*tokens)?)?;
        Ok(Grant { token, expires_unix })
    }

    /// Makes every token look older by `secs` (tests of expiry).
    #[cfg(test)]
    fn age_tokens(&self, secs: i64) {
        for e in self.inner.tokens.lock().unwrap().values_mut() {
            e.expires_unix -= secs;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Secret<String> {
        Secret::new(s.to_string())
    }

    #[tokio::test]
    async fn no_password_means_open() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Gate::new(dir.path());
        assert_eq!(gate.admit("user:a", "").map(|_| ()), Ok(()));
        assert_eq!(status(dir.path()).unwrap(), None);
    }

    #[tokio::test]
    async fn tokens_are_bound_to_principal_password_and_time() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "correct horse").unwrap();
        let gate = Gate::new(dir.path());
        assert_eq!(gate.admit("user:a", ""), Err(Denial::Required));
        assert_eq!(gate.unlock("user:a", "ip:a", pw("nope")).await, Err(Denial::Wrong));
        let grant = gate.unlock("user:a", "ip:a", pw("correct horse")).await.unwrap();
        assert!(grant.token.expose().starts_with("cmdopa_"));
        assert_eq!(gate.admit("user:a", grant.token.expose()).map(|_| ()), Ok(()));
        assert_eq!(gate.admit("user:b", grant.token.expose()), Err(Denial::Required), "another principal");
        assert_eq!(gate.admit("user:a", "cmdopa_forged"), Err(Denial::Required));
        // A restarted agent still knows the token; the file holds only its hash.
        let stored = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(grant.token.expose().as_str()));
        assert_eq!(Gate::new(dir.path()).admit("user:a", grant.token.expose()).map(|_| ()), Ok(()));
        // Expired by the clock.
        gate.age_tokens(TOKEN_TTL_SECS + 1);
        assert_eq!(gate.admit("user:a", grant.token.expose()), Err(Denial::Required));
    }

    #[tokio::test]
    async fn changing_the_password_ends_every_token() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "first password").unwrap();
        let gate = Gate::new(dir.path());
        let grant = gate.unlock("link:l", "ip:a", pw("first password")).await.unwrap();
        set(dir.path(), "second password").unwrap();
        assert_eq!(gate.admit("link:l", grant.token.expose()), Err(Denial::Required));
        assert!(clear(dir.path()).unwrap());
        assert_eq!(gate.admit("link:l", "").map(|_| ()), Ok(()), "no password: open again");
        assert!(!clear(dir.path()).unwrap());
    }

    #[tokio::test]
    async fn wrong_answers_back_off_per_principal_and_per_source_never_per_machine() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "s3cret-pass").unwrap();
        let gate = Gate::new(dir.path());
        // Three past the allowance: a 4 s wait, longer than an argon2 check takes.
        for _ in 0..FREE_PER_PRINCIPAL + 3 {
            let _ = gate.unlock("user:mallory", "ip:x", pw("guess")).await;
        }
        let held = gate.unlock("user:mallory", "ip:y", pw("s3cret-pass")).await;
        assert!(matches!(held, Err(Denial::Throttled(w)) if w > Duration::ZERO), "{held:?}");
        assert!(gate.unlock("user:alice", "ip:a", pw("s3cret-pass")).await.is_ok(), "another principal is not held up");
        // Many links guessed from one source: that source backs off, nobody else does.
        for i in 0..FREE_PER_SOURCE {
            let _ = gate.unlock(&format!("link:{i}"), "ip:x", pw("guess")).await;
        }
        let same_source = gate.unlock("link:fresh", "ip:x", pw("s3cret-pass")).await;
        assert!(matches!(same_source, Err(Denial::Throttled(_))), "{same_source:?}");
        assert!(gate.unlock("link:other", "ip:owner", pw("s3cret-pass")).await.is_ok(), "the owner is not locked out");
        assert!(gate.unlock("user:alice", "user:alice", pw("s3cret-pass")).await.is_ok());
    }

    #[tokio::test]
    async fn guesses_sent_at_once_are_counted_before_they_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "s3cret-pass").unwrap();
        let gate = Gate::new(dir.path());
        let all = (0..12).map(|_| gate.unlock("link:a", "ip:x", pw("guess")));
        let answers = futures_util::future::join_all(all).await;
        let throttled = answers.iter().filter(|a| matches!(a, Err(Denial::Throttled(_)))).count();
        assert_eq!(throttled, 12 - (FREE_PER_PRINCIPAL as usize + 1), "{answers:?}");
    }

    #[tokio::test]
    async fn an_unreadable_password_file_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PASSWORD_FILE), b"not json").unwrap();
        let gate = Gate::new(dir.path());
        assert_eq!(gate.admit("user:a", ""), Err(Denial::Required));
        assert_eq!(gate.unlock("user:a", "ip:a", pw("x")).await, Err(Denial::Wrong));
    }
}
