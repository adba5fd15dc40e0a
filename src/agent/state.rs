//! The agent's enrollment state: machine id and credential, in a 0600 file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// What enrollment gave this machine.
#[derive(Serialize, Deserialize)]
pub struct Enrollment {
    /// Server the agent dials.
    pub server: String,
    /// This machine's id.
    pub machine_id: String,
    /// The machine credential (the server keeps only its hash).
    pub credential: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("server", &self.server)
            .field("machine_id", &self.machine_id)
            .field("credential", &Secret::new(()))
            .finish()
    }
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.json")
}

/// The saved enrollment, if this machine has one.
pub fn load(state_dir: &Path) -> anyhow::Result<Option<Enrollment>> {
    let path = path(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is corrupt: remove it and enroll again", path.display()))
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Saves the enrollment with mode 0600, atomically (write a temp file, then rename).
pub fn save(state_dir: &Path, enrollment: &Enrollment) -> anyhow::Result<()> {
    crate::server::ensure_private_dir(state_dir)?;
    let path = path(state_dir);
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(enrollment)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
