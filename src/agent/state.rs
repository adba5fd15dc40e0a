//! The agent's enrollment state: machine id and credential, in a 0600 file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::secret::Secret;

/// What enrollment gave this machine.
#[derive(Serialize, Deserialize)]
pub(crate) struct Enrollment {
    /// Server the agent dials.
    pub(crate) server: String,
    /// This machine's id.
    pub(crate) machine_id: String,
    /// The machine credential (the server keeps only its hash).
    pub(crate) credential: String,
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
pub(crate) fn load(state_dir: &Path) -> anyhow::Result<Option<Enrollment>> {
    crate::sys::private_file::read_json(&path(state_dir), "remove it and enroll again")
}

/// Saves the enrollment with mode 0600, atomically.
pub(crate) fn save(state_dir: &Path, enrollment: &Enrollment) -> anyhow::Result<()> {
    crate::sys::private_file::write(&path(state_dir), &serde_json::to_vec_pretty(enrollment)?)
}
