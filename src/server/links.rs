//! Share links as the server manages them: minting (store row + signed token), the hot-path
//! check the gateway runs, revocation (store, in-memory set, live sockets) and key rotation.
//!
//! Transport-free: the gateway and the API are adapters over this. Every socket opened
//! through a link subscribes to the link's `watch` channel, so a revocation reaches it at
//! once and the number of subscribers is the link's live session count.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use thiserror::Error;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::core::ids::{FleetId, LinkId, MachineId, UserId};
use crate::core::link_token::{
    KeyError, KeyRing, LinkClaims, LinkError, LinkMode, Revocations, token_hash, verify_link,
};
use crate::core::sync::lock;
use crate::store::{AuditEvent, LinkRow, NewLink, Store, StoreError};

/// Shortest link lifetime: 5 seconds.
pub const MIN_TTL: Duration = Duration::from_secs(5);
/// Default server maximum: 30 days.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
/// How often the key file is checked for a rotation done by `cmdop server keys rotate`.
const KEY_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Why a share could not be made or changed.
#[derive(Debug, Error)]
pub enum ShareError {
    /// TTL out of bounds.
    #[error("--ttl must be between 5s and {max}")]
    BadTtl {
        /// The server's maximum, formatted.
        max: String,
    },
    /// No such link in this fleet.
    #[error("no share link {0} in this fleet; see `cmdop connect shares`")]
    UnknownLink(String),
    /// Key file trouble.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to share.
#[derive(Debug)]
pub struct ShareSpec {
    /// Who asks (already authorized).
    pub user: UserId,
    /// Fleet of the machine.
    pub fleet: FleetId,
    /// Machine.
    pub machine: MachineId,
    /// Lifetime.
    pub ttl: Duration,
    /// Viewer link.
    pub read_only: bool,
    /// Limit on sessions opened.
    pub max_opens: Option<i64>,
    /// Persistent session to join.
    pub session: Option<String>,
    /// The client surface asking (`cli`, `mcp`, `web`), for the audit log.
    pub surface: &'static str,
}

/// A newly minted link: the token goes to the user once and is never stored.
#[derive(Debug)]
pub struct Minted {
    /// Link id.
    pub id: LinkId,
    /// The secret token (URL path segment).
    pub token: crate::core::secret::Secret<String>,
    /// Deadline, unix seconds.
    pub expires_at: i64,
}

/// The link registry. Cheap to clone.
#[derive(Clone)]
pub struct Shares {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    data_dir: PathBuf,
    max_ttl: Duration,
    keys: RwLock<KeyRing>,
    key_file_stamp: Mutex<Option<std::time::SystemTime>>,
    revocations: Revocations,
    live: Mutex<HashMap<LinkId, watch::Sender<bool>>>,
}

fn key_file_stamp(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir.join(crate::core::link_token::KEY_FILE)).and_then(|m| m.modified()).ok()
}

fn unix(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Shares {
    /// Loads keys from `data_dir` and the live revocations from the store.
    pub async fn load(store: Store, data_dir: &Path, max_ttl: Duration) -> Result<Self, ShareError> {
        let keys = KeyRing::load_or_create(data_dir)?;
        let revocations = Revocations::new();
        for (id, deadline) in store.live_revocations().await? {
            revocations.revoke(id, unix(deadline));
        }
        let inner = Inner {
            store,
            data_dir: data_dir.to_path_buf(),
            max_ttl,
            keys: RwLock::new(keys),
            key_file_stamp: Mutex::new(key_file_stamp(data_dir)),
            revocations,
            live: Mutex::default(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Longest TTL a link may get.
    pub fn max_ttl(&self) -> Duration {
        self.inner.max_ttl
    }

    /// Mints a link and stores its row (with the token's hash) and an audit event.
    pub async fn create(&self, spec: ShareSpec) -> Result<Minted, ShareError> {
        if spec.ttl < MIN_TTL || spec.ttl > self.inner.max_ttl {
            return Err(ShareError::BadTtl { max: crate::core::duration::format(self.inner.max_ttl) });
        }
        let id = LinkId::random();
        let expires_at = crate::core::clock::now() + i64::try_from(spec.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = LinkClaims {
            link_id: id,
            machine_id: spec.machine,
            deadline: unix(expires_at),
            mode: if spec.read_only { LinkMode::ReadOnly } else { LinkMode::ReadWrite },
        };
        let token = crate::core::sync::read(&self.inner.keys).mint(&claims);
        let hash = token_hash(&token);
        let row = NewLink {
            id,
            fleet_id: spec.fleet,
            machine_id: spec.machine,
            token_hash: &hash,
            created_by: spec.user,
            expires_at,
            read_only: spec.read_only,
            max_opens: spec.max_opens,
            session_id: spec.session,
        };
        self.inner.store.insert_link(&row).await?;
        let detail = format!("ttl={}s read_only={}", spec.ttl.as_secs(), spec.read_only);
        let event = row_event(spec.fleet, spec.machine, id);
        self.audit(&spec.user.to_string(), spec.surface, "link.create", &event, detail).await;
        Ok(Minted { id, token: crate::core::secret::Secret::new(token), expires_at })
    }

    /// The hot-path check: parse -> key -> MAC -> deadline -> revocation set. No database.
    pub fn verify(&self, token: &str) -> Result<LinkClaims, LinkError> {
        let now = OffsetDateTime::now_utc();
        let keys = crate::core::sync::read(&self.inner.keys);
        verify_link(&keys, &self.inner.revocations, token, now)
    }

    /// Revokes links: store, in-memory set, then every open socket of them (close 4002).
    /// Returns the ids that were live.
    pub async fn revoke(&self, actor: UserId, surface: &str, links: &[LinkRow]) -> Result<Vec<LinkId>, ShareError> {
        let ids: Vec<LinkId> = links.iter().map(|l| l.id).collect();
        let revoked = self.inner.store.revoke_links(&ids).await?;
        for (id, deadline) in &revoked {
            self.inner.revocations.revoke(*id, unix(*deadline));
            if let Some(live) = lock(&self.inner.live).remove(id) {
                let _ = live.send(true);
            }
        }
        for link in links.iter().filter(|l| revoked.iter().any(|(id, _)| *id == l.id)) {
            let event = row_event(link.fleet_id, link.machine_id, link.id);
            self.audit(&actor.to_string(), surface, "link.revoke", &event, String::new()).await;
        }
        Ok(revoked.into_iter().map(|(id, _)| id).collect())
    }

    /// Subscribes a socket to the link's revocation; the value turns `true` on revoke.
    pub fn subscribe(&self, link: LinkId) -> watch::Receiver<bool> {
        let mut live = lock(&self.inner.live);
        live.retain(|_, tx| tx.receiver_count() > 0);
        live.entry(link).or_insert_with(|| watch::channel(false).0).subscribe()
    }

    /// Sockets currently open through the link.
    pub fn active_sessions(&self, link: LinkId) -> usize {
        lock(&self.inner.live).get(&link).map_or(0, |tx| tx.receiver_count())
    }

    /// The store (for rows and opens).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Records an audit event about a link; failures are logged, not fatal.
    pub async fn audit(&self, actor: &str, surface: &str, action: &str, link: &LinkEvent, detail: String) {
        let event = AuditEvent {
            actor,
            action,
            surface,
            fleet_id: Some(link.fleet.to_string()),
            machine_id: Some(link.machine.to_string()),
            link_id: Some(link.link.to_string()),
            detail,
        };
        if let Err(e) = self.inner.store.audit(event).await {
            tracing::warn!(link = %link.link, error = %e, "could not write audit event");
        }
    }

    /// Records an audit event about a link known by id only, seen through the link itself
    /// (surface `link`).
    pub async fn audit_link(&self, actor: &str, action: &str, link: LinkId, detail: String) {
        match self.inner.store.link(link).await {
            Ok(Some(row)) => {
                let event = row_event(row.fleet_id, row.machine_id, link);
                self.audit(actor, "link", action, &event, detail).await
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%link, error = %e, "could not write audit event"),
        }
    }

    /// Picks up a key rotation written by `cmdop server keys rotate`, and prunes expired
    /// revocations. Run periodically by the server.
    pub fn maintain(&self) {
        self.inner.revocations.prune(OffsetDateTime::now_utc());
        let stamp = key_file_stamp(&self.inner.data_dir);
        let mut seen = lock(&self.inner.key_file_stamp);
        if stamp == *seen {
            return;
        }
        match KeyRing::load_or_create(&self.inner.data_dir) {
            Ok(keys) => {
                *crate::core::sync::write(&self.inner.keys) = keys;
                *seen = stamp;
                tracing::info!("reloaded share-link keys");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload share-link keys; keeping the old ones")
            }
        }
    }

    /// Runs `maintain` every few seconds until the returned handle is dropped/aborted.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let shares = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEY_RELOAD_EVERY);
            loop {
                tick.tick().await;
                shares.maintain();
            }
        })
    }
}

/// What an audit event about a link names.
#[derive(Clone, Copy, Debug)]
pub struct LinkEvent {
    /// Fleet.
    pub fleet: FleetId,
    /// Machine.
    pub machine: MachineId,
    /// Link.
    pub link: LinkId,
}

fn row_event(fleet: FleetId, machine: MachineId, link: LinkId) -> LinkEvent {
    LinkEvent { fleet, machine, link }
}

/// Rotates the key file in `data_dir` (run by `cmdop server keys rotate`); a running server
/// picks the new key up within seconds. Returns the new key id.
pub fn rotate_keys(data_dir: &Path, max_ttl: Duration) -> Result<u32, KeyError> {
    let mut ring = KeyRing::load_or_create(data_dir)?;
    let max = time::Duration::seconds(i64::try_from(max_ttl.as_secs()).unwrap_or(i64::MAX / 2));
    ring.rotate(data_dir, OffsetDateTime::now_utc(), max)
}
