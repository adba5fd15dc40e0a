//! The one place wire messages (`proto`) become domain values and back, for both ends of the
//! agent stream (the agent sends them, the relay reads them).

#![warn(missing_docs)]

use std::time::Duration;

use crate::core::ids::SessionId;
use crate::core::session::{AttachSpec, Attachment, Denial, SessionSummary, ShellTarget};
use crate::proto;

/// A denial on the wire.
pub fn denial_to_wire(denial: Denial) -> proto::Denial {
    let kind = match denial {
        Denial::Required => proto::DenialKind::Required,
        Denial::Wrong => proto::DenialKind::Wrong,
        Denial::Throttled(_) => proto::DenialKind::Throttled,
    };
    let retry_after_ms = u64::try_from(denial.retry_after().as_millis()).unwrap_or(u64::MAX);
    proto::Denial { kind: kind as i32, retry_after_ms }
}

/// A wire denial as a `Denial` (an unknown kind reads as `Required`: refuse, never admit).
pub fn denial_from_wire(d: &proto::Denial) -> Denial {
    match d.kind() {
        proto::DenialKind::Required => Denial::Required,
        proto::DenialKind::Wrong => Denial::Wrong,
        proto::DenialKind::Throttled => Denial::Throttled(Duration::from_millis(d.retry_after_ms)),
    }
}

/// One wire session as a summary; `None` when its id is not a UUID (a broken agent).
pub fn summary_of(s: proto::ShellSession) -> Option<SessionSummary> {
    Some(SessionSummary {
        id: s.id.parse().ok()?,
        name: Some(s.name).filter(|n| !n.is_empty()),
        persistent: s.persistent,
        created_unix_ms: s.created_unix_ms,
        last_attached_unix_ms: s.last_attached_unix_ms,
        attached: s.attached,
        pid: s.pid,
        output_bytes: s.output_bytes,
    })
}

/// A summary on the wire.
pub fn shell_session(s: &SessionSummary) -> proto::ShellSession {
    proto::ShellSession {
        id: s.id.to_string(),
        name: s.name.clone().unwrap_or_default(),
        persistent: s.persistent,
        created_unix_ms: s.created_unix_ms,
        last_attached_unix_ms: s.last_attached_unix_ms,
        attached: s.attached,
        pid: s.pid,
        output_bytes: s.output_bytes,
    }
}

/// The attachment an `Opened` reports, if it is one (a shell session's id is set).
pub fn attachment_of(o: &proto::Opened) -> Option<Attachment> {
    let id: SessionId = o.session_id.parse().ok()?;
    Some(Attachment {
        id,
        name: Some(o.session_name.clone()).filter(|n| !n.is_empty()),
        persistent: o.persistent,
        created: o.created,
        replay_from: o.replay_from,
        dropped: o.dropped,
    })
}

/// The `Open` of an attach (channel and window are filled in by the caller).
pub fn open_of(spec: &AttachSpec) -> proto::Open {
    let mut open = proto::Open {
        kind: proto::SessionKind::Shell as i32,
        cols: spec.cols.into(),
        rows: spec.rows.into(),
        resume_from: spec.resume_from,
        principal: spec.access.principal.clone(),
        attach_token: spec.access.token.as_ref().map(|t| t.expose().clone()).unwrap_or_default(),
        ..Default::default()
    };
    match &spec.target {
        ShellTarget::New { persistent } => open.persistent = *persistent,
        ShellTarget::Named(name) => {
            open.session_name = name.to_string();
            open.persistent = true;
        }
        ShellTarget::Id(id) => open.session_id = id.to_string(),
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_survive_the_wire() {
        for d in [Denial::Required, Denial::Wrong, Denial::Throttled(Duration::from_millis(2500))] {
            assert_eq!(denial_from_wire(&denial_to_wire(d)), d);
        }
        let unknown = crate::proto::Denial { kind: 99, retry_after_ms: 0 };
        assert_eq!(denial_from_wire(&unknown), Denial::Required);
    }
}
