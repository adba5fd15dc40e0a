//! Small files only their owner may read (credentials, tokens, the agent's enrollment and
//! attach password): written with mode 0600 atomically (temp file, then rename), read as JSON.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Creates `dir` (and parents) readable only by its owner (0700).
pub(crate) fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create folder {}", dir.display()))
}

/// Writes `bytes` to `path` with mode 0600, creating its folder (0700) if needed. Readers see
/// the old content or the new, never half of it; concurrent writers each write their own temp
/// file, so the last rename wins whole.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{:016x}.tmp", rand::random::<u64>()));
    let tmp = path.with_file_name(tmp_name);
    let written = write_new(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display())));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates `path` (which must not exist) with mode 0600 and `bytes`, flushed to disk.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(file.sync_all()?)
}

/// The bytes in `path`, or `None` when there is no such file.
pub(crate) fn read(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The JSON in `path`, or `None` when there is no such file. `hint` ends the message about a
/// corrupt file ("remove it", "remove it and enroll again").
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path, hint: &str) -> anyhow::Result<Option<T>> {
    let Some(bytes) = read(path)? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt: {hint}", path.display()))?))
}

/// Removes `path`; true when it existed.
pub(crate) fn remove(path: &Path) -> anyhow::Result<bool> {
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

    #[test]
    fn a_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        super::write(&path, b"1").unwrap();
        super::write(&path, b"2").unwrap();
        assert_eq!(super::read(&path).unwrap().unwrap(), b"2");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
