//! Small files only their owner may read (credentials, tokens, the agent's enrollment and
//! attach password): written with mode 0600 atomically (temp file, then rename), read as JSON.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Creates `dir` (and parents) readable only by its owner (0700).
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create folder {}", dir.display()))
}

/// Writes `bytes` to `path` with mode 0600, creating its folder (0700) if needed. Readers see
/// the old content or the new, never half of it.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The JSON in `path`, or `None` when there is no such file. `hint` ends the message about a
/// corrupt file ("remove it", "remove it and enroll again").
pub fn read_json<T: DeserializeOwned>(path: &Path, hint: &str) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt: {hint}", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Removes `path`; true when it existed.
pub fn remove(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_files_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.json");
        super::write(&path, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let v: serde_json::Value = super::read_json(&path, "remove it").unwrap().unwrap();
        assert_eq!(v["a"], 1);
        std::fs::write(&path, b"garbage").unwrap();
        let err = super::read_json::<serde_json::Value>(&path, "remove it").unwrap_err();
        assert!(format!("{err:#}").contains("is corrupt: remove it"), "{err:#}");
        assert!(super::remove(&path).unwrap());
        assert!(!super::remove(&path).unwrap());
        assert!(super::read_json::<serde_json::Value>(&path, "").unwrap().is_none());
    }
}
