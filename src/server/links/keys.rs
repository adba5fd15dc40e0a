//! Where the link-signing key ring lives. One node: the file `link-keys.json` in the data
//! folder, mode 0600, written atomically (`crate::sys::private_file`), reloaded when `cmdop
//! server keys rotate` (another process) rewrote it. Several nodes: one row in the shared
//! database, sealed under the cluster key (`core::cluster_key`), so every node signs and
//! verifies with the same ring and a database reader alone cannot mint links; a rotation
//! bumps its version and every node reloads it within seconds.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use time::OffsetDateTime;

use crate::core::cluster_key::ClusterKey;
use crate::core::link_token::KeyRing;
use crate::store::Store;
use crate::sys::private_file;

/// The key file's name inside the data folder.
pub(crate) const KEY_FILE: &str = "link-keys.json";

/// Loads `dir/link-keys.json`, or creates it with one new key when it does not exist. Retired
/// keys past `verify_until` at `now` are dropped (and the file rewritten without them).
pub(crate) fn load(dir: &Path, now: OffsetDateTime) -> anyhow::Result<KeyRing> {
    let path = dir.join(KEY_FILE);
    let Some(bytes) = private_file::read(&path)? else {
        let ring = KeyRing::generate()?;
        save(dir, &ring)?;
        return Ok(ring);
    };
    let mut ring = KeyRing::from_json(&bytes).with_context(|| format!("key file {} is not valid", path.display()))?;
    if ring.prune(now) {
        save(dir, &ring)?;
    }
    Ok(ring)
}

/// Adds a new key to the file in `dir` (`cmdop server keys rotate`) and returns its id; a
/// running server picks it up within seconds. Old keys keep verifying for `max_ttl`, the
/// longest TTL a link may have been given.
pub(crate) fn rotate(dir: &Path, max_ttl: Duration) -> anyhow::Result<u32> {
    let now = OffsetDateTime::now_utc();
    let mut ring = load(dir, now)?;
    let max = time::Duration::seconds(i64::try_from(max_ttl.as_secs()).unwrap_or(i64::MAX / 2));
    let id = ring.rotate(now, max)?;
    save(dir, &ring)?;
    Ok(id)
}

fn save(dir: &Path, ring: &KeyRing) -> anyhow::Result<()> {
    private_file::write(&dir.join(KEY_FILE), &ring.to_json()?)
}

/// The key file as last read, to notice when another process rewrote it.
#[derive(Debug)]
pub(crate) struct KeyFile {
    dir: PathBuf,
    seen: Option<SystemTime>,
}

impl KeyFile {
    /// The file in `dir`, as it is now.
    pub(crate) fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), seen: stamp(dir) }
    }

    /// The ring again if the file changed since it was last read; `None` when it did not.
    /// A file that cannot be read is an error, and is tried again next time.
    pub(crate) fn reload_if_changed(&mut self) -> Option<anyhow::Result<KeyRing>> {
        let now = stamp(&self.dir);
        if now == self.seen {
            return None;
        }
        let ring = load(&self.dir, OffsetDateTime::now_utc());
        if ring.is_ok() {
            self.seen = now;
        }
        Some(ring)
    }
}

/// The shared ring's name in the database (also the sealing label).
pub(crate) const SHARED_NAME: &str = "link-keys";

/// The shared ring from the database: created (and stored) on the first node's first start,
/// with the version it was read at.
pub(crate) async fn load_shared(store: &Store, key: &ClusterKey) -> anyhow::Result<(KeyRing, i64)> {
    for _ in 0..3 {
        if let Some(found) = read_shared(store, key).await? {
            return Ok(found);
        }
        let ring = KeyRing::generate()?;
        if store.swap_secret(SHARED_NAME, None, &key.seal(SHARED_NAME, &ring.to_json()?)?).await? {
            return Ok((ring, 1));
        }
        // Another node created it meanwhile: read theirs.
    }
    anyhow::bail!("cannot create the shared link keys: other nodes keep changing them")
}

/// The shared ring if it exists, pruned of keys past their last link's deadline.
pub(crate) async fn read_shared(store: &Store, key: &ClusterKey) -> anyhow::Result<Option<(KeyRing, i64)>> {
    let Some(stored) = store.secret(SHARED_NAME).await? else { return Ok(None) };
    let json = key.open(SHARED_NAME, &stored.sealed)?;
    let mut ring = KeyRing::from_json(&json).context("the shared link keys are not valid")?;
    ring.prune(OffsetDateTime::now_utc());
    Ok(Some((ring, stored.version)))
}

/// Adds a new key to the shared ring (`cmdop server keys rotate --database`), retrying when
/// another node changed it meanwhile; returns the new key's id.
pub(crate) async fn rotate_shared(store: &Store, key: &ClusterKey, max_ttl: Duration) -> anyhow::Result<u32> {
    let max = time::Duration::seconds(i64::try_from(max_ttl.as_secs()).unwrap_or(i64::MAX / 2));
    for _ in 0..5 {
        let (mut ring, version) = load_shared(store, key).await?;
        let id = ring.rotate(OffsetDateTime::now_utc(), max)?;
        if store.swap_secret(SHARED_NAME, Some(version), &key.seal(SHARED_NAME, &ring.to_json()?)?).await? {
            return Ok(id);
        }
    }
    anyhow::bail!("cannot rotate the shared link keys: other nodes keep changing them")
}

fn stamp(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join(KEY_FILE)).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::{LinkId, MachineId};
    use crate::core::link_token::{KeyError, LinkClaims, LinkMode};
    use anyhow::{Result, ensure};
    use std::os::unix::fs::PermissionsExt;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

    fn claims() -> LinkClaims {
        LinkClaims {
            link_id: LinkId::random(),
            machine_id: MachineId::random(),
            deadline: crate::core::clock::from_unix(crate::core::clock::now() + 3600),
            mode: LinkMode::ReadWrite,
        }
    }

    #[test]
    fn rotation_keeps_old_links_and_signs_new_ones_with_the_new_key() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let ring = load(dir.path(), T0)?;
        let (old_claims, new_claims) = (claims(), claims());
        let old = ring.mint(&old_claims);
        ensure!(rotate(dir.path(), Duration::from_secs(86_400))? == 2);
        let reloaded = load(dir.path(), OffsetDateTime::now_utc())?;
        ensure!(reloaded.current_key_id() == 2);
        let new = reloaded.mint(&new_claims);
        let now = OffsetDateTime::now_utc();
        ensure!(reloaded.verify(&old, now)? == old_claims);
        ensure!(reloaded.verify(&new, now)? == new_claims);
        Ok(())
    }

    #[test]
    fn keys_past_verify_until_are_pruned_from_the_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let old = load(dir.path(), OffsetDateTime::now_utc())?.mint(&claims());
        rotate(dir.path(), Duration::from_secs(3600))?;
        let late = OffsetDateTime::now_utc() + time::Duration::hours(2);
        load(dir.path(), late)?;
        let reread = KeyRing::from_json(&std::fs::read(dir.path().join(KEY_FILE))?)?;
        ensure!(reread.verify(&old, OffsetDateTime::now_utc()).is_err(), "the retired key left the file");
        Ok(())
    }

    #[test]
    fn key_file_is_private_and_written_whole() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        load(&data, T0)?;
        let path = data.join(KEY_FILE);
        ensure!(std::fs::metadata(&path)?.permissions().mode() & 0o777 == 0o600);
        rotate(&data, Duration::from_secs(86_400))?;
        ensure!(std::fs::metadata(&path)?.permissions().mode() & 0o777 == 0o600);
        let names: Vec<_> = std::fs::read_dir(&data)?.collect::<Result<_, _>>()?;
        ensure!(names.len() == 1, "temp files left: {names:?}");
        Ok(())
    }

    #[test]
    fn corrupt_key_file_is_a_format_error() -> Result<()> {
        let dir = tempfile::tempdir()?;
        for text in ["not json", r#"{"current":1,"keys":[]}"#, r#"{"current":1,"keys":[{"id":1,"secret":"AAAA"}]}"#] {
            std::fs::write(dir.path().join(KEY_FILE), text)?;
            let result = load(dir.path(), T0);
            let invalid = result.as_ref().err().and_then(|e| e.downcast_ref::<KeyError>());
            ensure!(matches!(invalid, Some(KeyError::Invalid(_))), "{text}: {result:?}");
        }
        Ok(())
    }

    #[test]
    fn a_rewritten_file_is_reloaded_once() -> Result<()> {
        let dir = tempfile::tempdir()?;
        load(dir.path(), T0)?;
        let mut file = KeyFile::new(dir.path());
        ensure!(file.reload_if_changed().is_none());
        // Make the change visible even on file systems with coarse timestamps.
        let bumped = SystemTime::now() + Duration::from_secs(5);
        rotate(dir.path(), Duration::from_secs(86_400))?;
        std::fs::File::options().write(true).open(dir.path().join(KEY_FILE))?.set_modified(bumped)?;
        ensure!(file.reload_if_changed().transpose()?.map(|r| r.current_key_id()) == Some(2));
        ensure!(file.reload_if_changed().is_none());
        Ok(())
    }
}
