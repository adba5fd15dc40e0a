//! The one place wire messages (`proto`) become domain values and back, for both ends of the
//! agent stream (the agent sends them, the relay reads them).

#![warn(missing_docs)]

use std::time::Duration;

use crate::core::ids::SessionId;
use crate::core::secret::Secret;
use crate::core::session::{
    Access, AttachSpec, Attachment, Denial, Ending, Exit, OpenSpec, OutputStream, SessionKind, SessionName,
    SessionSummary, ShellTarget, Start,
};
use crate::proto;

/// A denial on the wire.
pub(crate) fn denial_to_wire(denial: Denial) -> proto::Denial {
    let kind = match denial {
        Denial::Required => proto::DenialKind::Required,
        Denial::Wrong => proto::DenialKind::Wrong,
        Denial::Throttled(_) => proto::DenialKind::Throttled,
    };
    let retry_after_ms = u64::try_from(denial.retry_after().as_millis()).unwrap_or(u64::MAX);
    proto::Denial { kind: kind as i32, retry_after_ms }
}

/// A wire denial as a `Denial` (an unknown kind reads as `Required`: refuse, never admit).
pub(crate) fn denial_from_wire(d: &proto::Denial) -> Denial {
    match d.kind() {
        proto::DenialKind::Required => Denial::Required,
        proto::DenialKind::Wrong => Denial::Wrong,
        proto::DenialKind::Throttled => Denial::Throttled(Duration::from_millis(d.retry_after_ms)),
    }
}

/// A session's end on the wire: how it ended, whether its timeout passed, how long it ran.
pub(crate) fn closed_of(channel: u64, exit: &Exit) -> proto::Closed {
    let end = match &exit.ending {
        Ending::Code(code) => proto::closed::End::ExitCode(*code),
        Ending::Signal(signo) => proto::closed::End::Signal(*signo),
        Ending::Error(why) => proto::closed::End::Error(why.clone()),
        Ending::Denied(denial) => proto::closed::End::Denied(denial_to_wire(*denial)),
    };
    proto::Closed {
        channel,
        end: Some(end),
        timed_out: exit.timed_out,
        duration_ms: u64::try_from(exit.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

/// An output stream on the wire.
pub(crate) fn output_stream_to_wire(stream: OutputStream) -> proto::OutputStream {
    match stream {
        OutputStream::Stdout => proto::OutputStream::Stdout,
        OutputStream::Stderr => proto::OutputStream::Stderr,
    }
}

/// One wire session as a summary; `None` when its id is not a UUID (a broken agent).
pub(crate) fn summary_of(s: proto::ShellSession) -> Option<SessionSummary> {
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
pub(crate) fn shell_session(s: &SessionSummary) -> proto::ShellSession {
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
pub(crate) fn attachment_of(o: &proto::Opened) -> Option<Attachment> {
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

/// The `Opened` that answers an open: the process id and, for a shell, the attachment.
pub(crate) fn opened_of(channel: u64, pid: u32, input_window: u32, attachment: Option<&Attachment>) -> proto::Opened {
    let mut opened = proto::Opened { channel, input_window, pid, ..Default::default() };
    if let Some(a) = attachment {
        opened.session_id = a.id.to_string();
        opened.session_name = a.name.clone().unwrap_or_default();
        opened.persistent = a.persistent;
        opened.created = a.created;
        opened.replay_from = a.replay_from;
        opened.dropped = a.dropped;
    }
    opened
}

/// The shell session a SHELL `Open` asks for: by id, else by name, else a new one; a message
/// for the user when the id or name is malformed.
fn shell_target_of(open: &proto::Open) -> Result<ShellTarget, String> {
    if !open.session_id.is_empty() {
        let id = open.session_id.parse().map_err(|_| format!("{:?} is not a session id", open.session_id))?;
        return Ok(ShellTarget::Id(id));
    }
    if !open.session_name.is_empty() {
        return SessionName::parse(&open.session_name).map(ShellTarget::Named).map_err(|e| e.to_string());
    }
    Ok(ShellTarget::New { persistent: open.persistent })
}

/// What an `Open` asks the agent to start; a message for the user when it is malformed.
pub(crate) fn start_of(open: proto::Open) -> Result<Start, String> {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    let access = Access {
        principal: open.principal.clone(),
        token: (!open.attach_token.is_empty()).then(|| Secret::new(open.attach_token.clone())),
    };
    let env: Vec<(String, String)> = open.env.clone().into_iter().collect();
    match open.kind() {
        proto::SessionKind::Exec if open.argv.is_empty() => Err("no command given".into()),
        proto::SessionKind::Exec => Ok(Start::Exec(OpenSpec {
            kind: SessionKind::Exec,
            argv: open.argv,
            env,
            cols: clamp(open.cols),
            rows: clamp(open.rows),
            timeout: (open.timeout_ms > 0).then(|| Duration::from_millis(open.timeout_ms)),
            access,
        })),
        proto::SessionKind::Shell => {
            let target = shell_target_of(&open)?;
            let spec = AttachSpec {
                target,
                cols: clamp(open.cols),
                rows: clamp(open.rows),
                resume_from: open.resume_from,
                access,
            };
            Ok(Start::Shell(spec, env))
        }
    }
}

/// The `Open` of a session spec (channel and window are filled in by the caller).
pub(crate) fn open_of_spec(spec: OpenSpec) -> proto::Open {
    proto::Open {
        kind: match spec.kind {
            SessionKind::Exec => proto::SessionKind::Exec,
            SessionKind::Shell => proto::SessionKind::Shell,
        } as i32,
        argv: spec.argv,
        env: spec.env.into_iter().collect(),
        cols: spec.cols.into(),
        rows: spec.rows.into(),
        timeout_ms: spec.timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        principal: spec.access.principal,
        attach_token: spec.access.token.map(|t| t.expose().clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// The `Open` of an attach (channel and window are filled in by the caller).
pub(crate) fn open_of(spec: &AttachSpec) -> proto::Open {
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

    #[test]
    fn shell_targets_and_attachments_survive_the_wire() {
        let name = SessionName::parse("build").unwrap();
        let id = SessionId::random();
        for target in [ShellTarget::New { persistent: true }, ShellTarget::Named(name), ShellTarget::Id(id)] {
            let access = crate::core::session::Access { principal: "user:x".into(), token: None };
            let spec = AttachSpec { target: target.clone(), cols: 80, rows: 24, resume_from: None, access };
            assert_eq!(shell_target_of(&open_of(&spec)), Ok(target));
        }
        let attachment =
            Attachment { id, name: Some("build".into()), persistent: true, created: true, replay_from: 7, dropped: 3 };
        assert_eq!(attachment_of(&opened_of(1, 42, 0, Some(&attachment))), Some(attachment));
        assert_eq!(attachment_of(&opened_of(1, 42, 0, None)), None);
    }
}
