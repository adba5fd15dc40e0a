//! Share links as the server manages them, the one owner of their lifecycle: minting (store
//! row + signed token), the hot-path check, opening sessions (max opens), revocation (store,
//! in-memory set, live sockets), expiry, their audit trail, and the signing keys.
//!
//! Transport-free: the HTTP side and the API are adapters over [`Links`]; they never reach
//! the store for link rows. `keys` keeps the key ring's file in the data folder; `live` the
//! sockets open through each link, so a revocation reaches them at once.

pub(crate) mod keys;
mod live;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use thiserror::Error;
use time::OffsetDateTime;

use crate::core::clock::{self, from_unix};
use crate::core::cluster_key::ClusterKey;
use crate::core::ids::{FleetId, LinkId, MachineId, UserId};
use crate::core::link_token::{KeyRing, LinkClaims, LinkError, LinkMode, Revocations, verify_link};
use crate::core::secret::{Secret, hash_token};
use crate::core::sync::{read, write};
use crate::store::{AuditEvent, LinkRow, NewLink, Store, StoreError};
use crate::sys::task::AbortOnDrop;
use keys::KeyFile;
use live::Live;
pub(crate) use live::Revocation;

/// Shortest link lifetime: 5 seconds.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(5);
/// Default server maximum: 30 days.
pub(crate) const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Where the signing keys live: the data folder (one node) or the shared database, sealed
/// under the cluster key (several nodes).
pub(crate) enum KeyPlace {
    /// `link-keys.json` in this folder.
    Dir(std::path::PathBuf),
    /// The database's shared ring, opened with this key.
    Shared(Arc<ClusterKey>),
}

/// Where the ring was read from, to notice a rotation.
enum KeySource {
    File(KeyFile),
    Shared { key: Arc<ClusterKey>, version: i64 },
}

/// How often the key file is checked for a rotation done by `cmdop server keys rotate`.
const KEY_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Why a link could not be made, found or revoked.
#[derive(Debug, Error)]
pub(crate) enum LinkRequestError {
    /// TTL out of bounds.
    #[error("--ttl must be between 5s and {max}")]
    BadTtl {
        /// The server's maximum, formatted.
        max: String,
    },
    /// No such link in this fleet.
    #[error("no share link {0} in this fleet; see `cmdop connect shares`")]
    UnknownLink(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to share.
#[derive(Debug)]
pub(crate) struct LinkSpec {
    /// Who asks (already authorized).
    pub(crate) user: UserId,
    /// Fleet of the machine.
    pub(crate) fleet: FleetId,
    /// Machine.
    pub(crate) machine: MachineId,
    /// Lifetime.
    pub(crate) ttl: Duration,
    /// Viewer link.
    pub(crate) read_only: bool,
    /// Limit on sessions opened.
    pub(crate) max_opens: Option<i64>,
    /// Persistent session to join.
    pub(crate) session: Option<String>,
}

/// A newly minted link: the token goes to the user once and is never stored.
#[derive(Debug)]
pub(crate) struct Minted {
    /// Link id.
    pub(crate) id: LinkId,
    /// The secret token (URL path segment).
    pub(crate) token: Secret<String>,
    /// Deadline, unix seconds.
    pub(crate) expires_at: i64,
}

/// A session slot taken through a link by [`Links::open`].
#[derive(Debug)]
pub(crate) struct Opened {
    /// The persistent session (id or name) the link joins; `None` opens a new shell.
    pub(crate) joins: Option<String>,
}

/// The link registry. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Links {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    max_ttl: Duration,
    keys: RwLock<KeyRing>,
    key_source: tokio::sync::Mutex<KeySource>,
    revocations: Revocations,
    live: Live,
}

impl Links {
    /// Loads the keys from their place (creating them on first run) and the live revocations
    /// from the store.
    pub(crate) async fn load(store: Store, place: KeyPlace, max_ttl: Duration) -> anyhow::Result<Self> {
        let (keys, source) = match place {
            KeyPlace::Dir(dir) => (keys::load(&dir, OffsetDateTime::now_utc())?, KeySource::File(KeyFile::new(&dir))),
            KeyPlace::Shared(key) => {
                let (ring, version) = keys::load_shared(&store, &key).await?;
                (ring, KeySource::Shared { key, version })
            }
        };
        let revocations = Revocations::new();
        for (id, deadline) in store.live_revocations().await.context("cannot read revoked links")? {
            revocations.revoke(id, from_unix(deadline));
        }
        let inner = Inner {
            store,
            max_ttl,
            keys: RwLock::new(keys),
            key_source: tokio::sync::Mutex::new(source),
            revocations,
            live: Live::default(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Mints a link and stores its row (with the token's hash) and an audit event.
    pub(crate) async fn create(&self, spec: LinkSpec) -> Result<Minted, LinkRequestError> {
        if spec.ttl < MIN_TTL || spec.ttl > self.inner.max_ttl {
            return Err(LinkRequestError::BadTtl { max: crate::core::duration::format(self.inner.max_ttl) });
        }
        let id = LinkId::random();
        let expires_at = clock::now() + i64::try_from(spec.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = LinkClaims {
            link_id: id,
            machine_id: spec.machine,
            deadline: from_unix(expires_at),
            mode: if spec.read_only { LinkMode::ReadOnly } else { LinkMode::ReadWrite },
        };
        let token = read(&self.inner.keys).mint(&claims);
        let hash = hash_token(&token);
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
        let event = LinkEvent { fleet: spec.fleet, machine: spec.machine, link: id };
        self.audit(&spec.user.to_string(), "link.create", &event, detail).await;
        Ok(Minted { id, token: Secret::new(token), expires_at })
    }

    /// The hot-path check: parse -> key -> MAC -> deadline -> revocation set. No database.
    pub(crate) fn verify(&self, token: &str) -> Result<LinkClaims, LinkError> {
        let keys = read(&self.inner.keys);
        verify_link(&keys, &self.inner.revocations, token, OffsetDateTime::now_utc())
    }

    /// Takes one of the link's session slots: `None` when its `max_opens` are used up or it
    /// was revoked meanwhile. A slot the machine then refuses goes back with [`Links::release`].
    pub(crate) async fn open(&self, link: LinkId) -> Result<Option<Opened>, StoreError> {
        if !self.inner.store.record_open(link).await? {
            return Ok(None);
        }
        let joins = match self.inner.store.link(link).await {
            Ok(row) => row.and_then(|l| l.session_id),
            Err(e) => {
                tracing::warn!(%link, error = %e, "cannot read the link's target session; opening a new shell");
                None
            }
        };
        Ok(Some(Opened { joins }))
    }

    /// Gives back a slot taken by [`Links::open`] that the machine refused (its attach
    /// password asked for a token the browser did not have yet): being asked for a password
    /// must not use up a link's `max_opens`.
    pub(crate) async fn release(&self, link: LinkId) -> Result<(), StoreError> {
        self.inner.store.release_open(link).await
    }

    /// Records that a session opened through the link; `client` says from where.
    pub(crate) async fn opened(&self, link: LinkId, client: String) {
        self.audit_link("anonymous", "link.open", link, client).await;
    }

    /// Records that a password was tried through the link; `detail` says from where and how
    /// it went.
    pub(crate) async fn unlock_tried(&self, link: LinkId, detail: String) {
        self.audit_link("anonymous", "link.unlock", link, detail).await;
    }

    /// Records that a socket of the link was closed at the link's deadline.
    pub(crate) async fn expired(&self, link: LinkId) {
        self.audit_link("system", "link.expire", link, String::new()).await;
    }

    /// Revokes links: store, in-memory set, then every open socket of them (close 4002).
    /// Returns the ids that were live.
    pub(crate) async fn revoke(&self, actor: UserId, links: &[LinkRow]) -> Result<Vec<LinkId>, LinkRequestError> {
        let ids: Vec<LinkId> = links.iter().map(|l| l.id).collect();
        let revoked = self.inner.store.revoke_links(&ids).await?;
        for (id, deadline) in &revoked {
            self.inner.revocations.revoke(*id, from_unix(*deadline));
            self.inner.live.revoke(*id);
        }
        for link in links.iter().filter(|l| revoked.iter().any(|(id, _)| *id == l.id)) {
            let event = LinkEvent { fleet: link.fleet_id, machine: link.machine_id, link: link.id };
            self.audit(&actor.to_string(), "link.revoke", &event, String::new()).await;
        }
        Ok(revoked.into_iter().map(|(id, _)| id).collect())
    }

    /// Subscribes a socket to the link's revocation.
    pub(crate) fn subscribe(&self, link: LinkId) -> Revocation {
        let revocation = self.inner.live.subscribe(link);
        // Revoked between the socket's check and this subscription: `revoke` had already
        // told the subscribers it knew of.
        if self.inner.revocations.is_revoked(&link) {
            return Revocation::revoked_already();
        }
        revocation
    }

    /// Sockets currently open through the link (and sessions parked for its browser).
    pub(crate) fn active_sessions(&self, link: LinkId) -> usize {
        self.inner.live.count(link)
    }

    /// One link's row.
    pub(crate) async fn get(&self, link: LinkId) -> Result<Option<LinkRow>, StoreError> {
        self.inner.store.link(link).await
    }

    /// Links of a fleet (optionally one machine), newest first.
    pub(crate) async fn list(&self, fleet: FleetId, machine: Option<MachineId>) -> Result<Vec<LinkRow>, StoreError> {
        self.inner.store.list_links(fleet, machine).await
    }

    /// The audit trail of one link, oldest first: (unix seconds, actor, action, detail).
    pub(crate) async fn audit_trail(&self, link: LinkId) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        self.inner.store.link_audit(link).await
    }

    /// Records an audit event about a link; failures are logged, not fatal.
    async fn audit(&self, actor: &str, action: &str, link: &LinkEvent, detail: String) {
        let event = AuditEvent {
            actor,
            action,
            fleet_id: Some(link.fleet.to_string()),
            machine_id: Some(link.machine.to_string()),
            link_id: Some(link.link.to_string()),
            detail,
        };
        if let Err(e) = self.inner.store.audit(event).await {
            tracing::warn!(link = %link.link, error = %e, "could not write audit event");
        }
    }

    /// Records an audit event about a link known by id only.
    async fn audit_link(&self, actor: &str, action: &str, link: LinkId, detail: String) {
        match self.inner.store.link(link).await {
            Ok(Some(row)) => {
                let event = LinkEvent { fleet: row.fleet_id, machine: row.machine_id, link };
                self.audit(actor, action, &event, detail).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%link, error = %e, "could not write audit event"),
        }
    }

    /// Picks up a key rotation written by `cmdop server keys rotate` (or another node), and
    /// prunes expired revocations. Run periodically by [`Links::spawn_maintenance`], and by
    /// the cluster's event follower when a node announces a rotation.
    pub(crate) async fn maintain(&self) {
        self.inner.revocations.prune(OffsetDateTime::now_utc());
        let mut source = self.inner.key_source.lock().await;
        let reloaded = match &mut *source {
            KeySource::File(file) => file.reload_if_changed(),
            KeySource::Shared { key, version } => match keys::read_shared(&self.inner.store, key).await {
                Ok(Some((ring, v))) if v != *version => {
                    *version = v;
                    Some(Ok(ring))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            },
        };
        match reloaded {
            None => {}
            Some(Ok(keys)) => {
                *write(&self.inner.keys) = keys;
                tracing::info!("reloaded share-link keys");
            }
            Some(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "cannot reload share-link keys; keeping the old ones")
            }
        }
    }

    /// Applies a revocation another node made: the in-memory set, then this node's sockets of
    /// the link (close 4002). Idempotent.
    pub(crate) async fn apply_revocation(&self, link: LinkId) -> Result<(), StoreError> {
        if let Some(row) = self.inner.store.link(link).await? {
            self.inner.revocations.revoke(link, from_unix(row.expires_at));
            self.inner.live.revoke(link);
        }
        Ok(())
    }

    /// Runs [`Links::maintain`] every few seconds until the returned handle is dropped.
    pub(crate) fn spawn_maintenance(&self) -> AbortOnDrop<()> {
        let links = self.clone();
        AbortOnDrop::spawn(async move {
            let mut tick = tokio::time::interval(KEY_RELOAD_EVERY);
            loop {
                tick.tick().await;
                links.maintain().await;
            }
        })
    }
}

/// What an audit event about a link names.
#[derive(Clone, Copy, Debug)]
struct LinkEvent {
    fleet: FleetId,
    machine: MachineId,
    link: LinkId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::secret::{new_token, prefix};
    use crate::store::MachineInfo;
    use std::path::Path;

    /// A registry over a fresh store holding one user, fleet and machine, and a spec for it.
    async fn fixture(dir: &Path) -> anyhow::Result<(Links, LinkSpec)> {
        let store = crate::store::open(dir).await?;
        let user = store.create_user("owner@example.com").await?;
        let fleet = store.fleet_named("default").await?;
        let enroll = hash_token(new_token(prefix::ENROLL).expose());
        store.create_enroll_token(&enroll, fleet.id, user.id, clock::now() + 60).await?;
        let info = MachineInfo { hostname: "box".into(), ..Default::default() };
        let machine = store.enroll_machine(&enroll, &hash_token("credential"), &info).await?;
        let links = Links::load(store, KeyPlace::Dir(dir.to_path_buf()), DEFAULT_MAX_TTL).await?;
        let spec = LinkSpec {
            user: user.id,
            fleet: fleet.id,
            machine: machine.id,
            ttl: Duration::from_secs(3600),
            read_only: false,
            max_opens: Some(1),
            session: None,
        };
        Ok((links, spec))
    }

    #[tokio::test]
    async fn a_link_opens_up_to_max_opens_and_a_refused_open_is_given_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (links, spec) = fixture(dir.path()).await?;
        let minted = links.create(spec).await?;
        let claims = links.verify(minted.token.expose())?;
        assert_eq!(claims.link_id, minted.id);
        assert!(links.open(minted.id).await?.is_some());
        assert!(links.open(minted.id).await?.is_none(), "max_opens is 1");
        links.release(minted.id).await?;
        assert!(links.open(minted.id).await?.is_some(), "a released open may be taken again");
        assert_eq!(links.get(minted.id).await?.map(|l| l.opens), Some(1));
        Ok(())
    }

    #[tokio::test]
    async fn revoking_refuses_the_token_and_reaches_sockets_subscribed_before_and_after() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (links, spec) = fixture(dir.path()).await?;
        let (user, minted) = (spec.user, links.create(spec).await?);
        let mut before = links.subscribe(minted.id);
        assert_eq!(links.active_sessions(minted.id), 1);
        let rows: Vec<LinkRow> = links.get(minted.id).await?.into_iter().collect();
        assert_eq!(links.revoke(user, &rows).await?, vec![minted.id]);
        assert_eq!(links.verify(minted.token.expose()), Err(LinkError::Revoked));
        let wait = Duration::from_secs(5);
        tokio::time::timeout(wait, before.revoked()).await?;
        tokio::time::timeout(wait, links.subscribe(minted.id).revoked()).await?;
        let actions: Vec<String> = links.audit_trail(minted.id).await?.into_iter().map(|(_, _, a, _)| a).collect();
        assert_eq!(actions, ["link.create", "link.revoke"]);
        Ok(())
    }
}
