//! Facts about this machine.

/// This machine's hostname ("unknown" when it has none that is UTF-8).
pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown".into())
}
