//! The share-link WebSocket: checks Origin and the link, then bridges browser frames to a
//! shell session through the router. Each socket holds the link's deadline timer (4001) and
//! its revocation subscription (4002). A connection's failure is logged once, at its end,
//! inside a span naming the link and the machine.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use super::HttpState;
use super::client_ip::ClientIp;
use super::lane::Lane;
use super::parked::{End, HandoffRequests, LinkSession};
use super::protocol::{ClientMessage, ServerMessage, close};
use super::ws::{self, Message, Reader, Socket, Writer, WsUpgrade};
use crate::core::ids::SessionId;
use crate::core::limits::SessionLimit;
use crate::core::link_token::{LinkClaims, LinkError, LinkMode};
use crate::core::session::{Access, OpenSpec, SessionEvent, SessionKind};
use crate::core::session::{AttachSpec, SessionName, ShellTarget};
use crate::server::links::Revocation;
use crate::server::metrics::{Limit, METRICS};
use crate::server::relay::router::{SessionControl, SessionPort};
use crate::sys::task::{AbortOnDrop, WakeFilter, WhenWoken};

/// `?session=<key>&offset=<n>`: resume a parked session from byte `n`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Resume {
    session: Option<Uuid>,
    offset: Option<u64>,
}

/// Read buffer of one link socket, resident for every open socket: browser input is
/// keystrokes (a few bytes) and pastes, which 1 KiB reads carry at no measurable cost; the
/// buffer grows only for a frame that needs more (docs/performance.md, issue 18).
const SOCKET_READ_BUFFER: usize = 1024;
/// Largest browser message (a paste) and frame: 1 MiB, not the library's 64 MiB / 16 MiB;
/// a bigger one closes the socket with 1009 (docs/reference.md, "Limits").
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The metric a session limit's refusal counts under.
pub(crate) fn refusal_metric(limit: SessionLimit) -> Limit {
    match limit {
        SessionLimit::Machine(_) => Limit::SessionsPerMachine,
        SessionLimit::Link(_) => Limit::SessionsPerLink,
        SessionLimit::Ip(_) => Limit::SessionsPerIp,
    }
}

/// `GET /s/{token}/ws`.
pub(crate) async fn bridge_socket(
    State(state): State<HttpState>,
    Path(token): Path<String>,
    Query(resume): Query<Resume>,
    ClientIp(peer): ClientIp,
    headers: HeaderMap,
    ws: WsUpgrade,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN)
        && origin.as_bytes() != state.public_origin.as_bytes()
    {
        return (StatusCode::FORBIDDEN, "cross-origin WebSocket refused\n").into_response();
    }
    let claims = match state.links.verify(&token) {
        Ok(c) => c,
        Err(LinkError::Expired { .. }) => {
            return ws.on_upgrade(|s| refuse(s, close::EXPIRED, "This link has expired"));
        }
        Err(LinkError::Revoked) => {
            return ws.on_upgrade(|s| refuse(s, close::REVOKED, "This link was revoked"));
        }
        Err(e) => return super::link_page::link_error(&state, &e),
    };
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let client = format!("ip={peer} ua={}", agent.chars().take(200).collect::<String>());
    let access = Access::link(claims.link_id, super::unlock::token_from(&headers));
    ws.on_upgrade(move |socket| run(state, claims, socket, resume, (client, peer), access))
}

async fn refuse(socket: Socket, code: u16, reason: &str) {
    let _ = socket.close(code, reason).await;
}

/// Why a socket closes before it reaches a shell: the close frame the browser gets and, when
/// the server is at fault, the cause for the log.
struct Refusal {
    code: u16,
    reason: std::borrow::Cow<'static, str>,
    fault: Option<String>,
}

impl Refusal {
    fn new(code: u16, reason: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self { code, reason: reason.into(), fault: None }
    }

    fn with_fault(self, fault: impl std::fmt::Display) -> Self {
        Self { fault: Some(fault.to_string()), ..self }
    }
}

/// The connection, from upgrade to close: its one exit, where its failure is logged.
async fn run(
    state: HttpState,
    claims: LinkClaims,
    socket: Socket,
    resume: Resume,
    (client, peer): (String, std::net::IpAddr),
    access: Access,
) {
    // The span is entered around the socket's set-up and its end, not around its pump: the
    // pump runs for every keystroke's echo, and entering a span there cost each key about
    // 300 instructions (docs/performance.md, issue 18). Nothing in the pump logs.
    let span = tracing::info_span!("link_socket", link = %claims.link_id, machine = %claims.machine_id);
    let revocation = state.links.subscribe(claims.link_id);
    let attached = attach(&state, &claims, resume, (&client, peer), access).instrument(span.clone()).await;
    match attached {
        Ok((session, from)) => bridge(state, claims, socket, session, from, revocation, span).await,
        Err(refusal) => {
            span.in_scope(|| match &refusal.fault {
                Some(fault) => tracing::error!(error = %fault, reason = %refusal.reason, "link socket failed"),
                None => tracing::debug!(reason = %refusal.reason, "link socket refused"),
            });
            refuse(socket, refusal.code, &refusal.reason).instrument(span).await;
        }
    }
}

/// Resumes the parked session the page names, or opens a new shell (counted as an open).
async fn attach(
    state: &HttpState,
    claims: &LinkClaims,
    resume: Resume,
    (client, peer): (&str, std::net::IpAddr),
    access: Access,
) -> Result<(LinkSession, u64), Refusal> {
    if let (Some(key), Some(offset)) = (resume.session, resume.offset)
        && let Some(session) = state.parked.take(key, claims.link_id, access.token.as_ref()).await
    {
        return Ok((session, offset));
    }
    if !state.router.is_connected(claims.machine_id).await {
        return Err(Refusal::new(close::OFFLINE, "The machine is offline"));
    }
    // Held by the session (parked too) until it ends.
    let (machine, link) = (claims.machine_id.to_string(), claims.link_id.to_string());
    let slot = state.slots.acquire(&machine, Some(&link), Some(peer)).map_err(|limit| {
        METRICS.refused(refusal_metric(limit));
        tracing::info!(%limit, "link session refused by a limit");
        Refusal::new(close::POLICY, limit.short())
    })?;
    let opened = match state.links.open(claims.link_id).await {
        Ok(Some(opened)) => opened,
        Ok(None) => return Err(Refusal::new(close::POLICY, "This link cannot open more sessions")),
        Err(e) => {
            let refusal = Refusal::new(close::POLICY, "Internal error");
            return Err(refusal.with_fault(format!("cannot record open: {e}")));
        }
    };
    // A page that lost its parked session (the agent's stream dropped meanwhile) still knows
    // how far it read: a persistent session replays from there, not from its ring's start.
    let grant = access.token.clone();
    let mut port = open_shell(state, claims, opened.joins.as_deref(), resume.offset, access).await?;
    // The first event says where this attachment's output starts: 0 for a new shell, the
    // replay point of the ring when the link joins a running persistent session.
    let start = match port.events.recv().await {
        Some(SessionEvent::Opened { attachment, .. }) => attachment.map_or(0, |a| a.replay_from),
        Some(e) if e.denial().is_some() => {
            let refusal = Refusal::new(close::PASSWORD, "This machine asks for its attach password");
            return Err(match state.links.release(claims.link_id).await {
                Ok(()) => refusal,
                Err(e) => refusal.with_fault(format!("cannot release a refused open: {e}")),
            });
        }
        Some(SessionEvent::Lost) | None => return Err(Refusal::new(close::OFFLINE, "The machine went offline")),
        Some(_) => return Err(Refusal::new(close::POLICY, "The session this link joins is not running")),
    };
    state.links.opened(claims.link_id, client.to_string()).await;
    tracing::info!("share link opened a session");
    let mut session = LinkSession::new(claims.link_id, port, grant.as_ref());
    session.slot = Some(slot);
    session.ring.push(start, &[]);
    Ok((session, start))
}

/// A new shell, or (`--session`) the persistent session the link joins, by id or name.
async fn open_shell(
    state: &HttpState,
    claims: &LinkClaims,
    joins: Option<&str>,
    resume_from: Option<u64>,
    access: Access,
) -> Result<SessionPort, Refusal> {
    let offline = |_| Refusal::new(close::OFFLINE, "The machine is offline");
    let Some(joins) = joins else {
        let spec =
            OpenSpec { kind: SessionKind::Shell, argv: vec![], env: vec![], cols: 80, rows: 24, timeout: None, access };
        return state.router.open(claims.machine_id, spec).await.map_err(offline);
    };
    let target = match joins.parse::<SessionId>() {
        Ok(id) => ShellTarget::Id(id),
        Err(_) => ShellTarget::Named(
            SessionName::parse(joins).map_err(|_| Refusal::new(close::POLICY, "This link names an invalid session"))?,
        ),
    };
    let spec = AttachSpec { target, cols: 80, rows: 24, resume_from, access };
    state.router.attach(claims.machine_id, spec).await.map_err(offline)
}

/// Output bytes the browser must have taken before their credit is granted back.
const CREDIT_BATCH: usize = crate::core::session::OUTPUT_WINDOW_BYTES as usize / 4;

enum Outcome {
    /// The browser left; `goodbye`: the close code it deserves as an answer, its own when it
    /// said goodbye with a close frame, the protocol's when it broke it.
    ClientGone {
        goodbye: Option<u16>,
    },
    /// A reconnect naming this session wants it (the browser came back on a new socket).
    TakenOver(oneshot::Sender<LinkSession>),
    Ended(End),
    Expired,
    Revoked,
    /// The server is shutting down.
    Stopping,
}

async fn send_json(sink: &mut Writer, msg: &ServerMessage) -> bool {
    let text = serde_json::to_string(msg).unwrap_or_default();
    sink.text(&text).await.is_ok()
}

/// How long a last message may wait for a browser that stopped reading: the session it
/// belongs to must end (a revoked link's shell with it) even if the message never leaves.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(2);

async fn close_with(sink: &mut Writer, code: u16, reason: &str) {
    let _ = tokio::time::timeout(LAST_WORDS, sink.close(code, reason)).await;
}

/// Replays from `from`, then pumps until the shell ends, the link dies or the browser goes.
async fn bridge(
    state: HttpState,
    claims: LinkClaims,
    socket: Socket,
    mut session: LinkSession,
    from: u64,
    mut revocation: Revocation,
    span: tracing::Span,
) {
    let (stream, mut sink) = socket.split(SOCKET_READ_BUFFER, MAX_MESSAGE_BYTES);
    let control = session.port.control.clone();
    let replay = session.ring.since(from);
    if replay.dropped > 0 {
        let text = format!("{} bytes of output were lost while reconnecting", replay.dropped);
        send_json(&mut sink, &ServerMessage::Notice { text }).await;
    }
    let ready = ServerMessage::Ready { session: session.key.to_string(), offset: replay.offset };
    if !send_json(&mut sink, &ready).await || (!replay.data.is_empty() && sink.binary(&replay.data).await.is_err()) {
        return span.in_scope(|| state.parked.park(session, deadline_of(&claims), revocation));
    }
    let owed = std::mem::take(&mut session.owed);
    if owed > 0 {
        let _ = control.consumed(owed).await;
    }
    let mut asked = state.parked.register(&session);
    let outcome = match session.ended {
        Some(end) => Outcome::Ended(end),
        None => pump(&mut sink, stream, &mut session, &claims, &mut revocation, &mut asked, state.stopped()).await,
    };
    // A reconnect may have asked just as this socket ended for another reason.
    let outcome = match (outcome, asked.try_recv()) {
        (Outcome::ClientGone { .. }, Ok(reply)) => Outcome::TakenOver(reply),
        (outcome, _) => outcome,
    };
    // Boxed: the socket's task would otherwise hold room for its last words all along.
    Box::pin(end(state, claims, sink, session, revocation, outcome).instrument(span)).await
}

/// Parks, hands over or ends the session as the socket's end asks, with the browser's last
/// words.
async fn end(
    state: HttpState,
    claims: LinkClaims,
    mut sink: Writer,
    session: LinkSession,
    revocation: Revocation,
    outcome: Outcome,
) {
    if !matches!(outcome, Outcome::TakenOver(_)) {
        state.parked.unregister(session.key);
    }
    match outcome {
        Outcome::ClientGone { goodbye } => {
            state.parked.park(session, deadline_of(&claims), revocation);
            // A browser that left with a close frame gets it answered (RFC 6455, 5.5.1) rather
            // than a dropped connection.
            if let Some(code) = goodbye {
                close_with(&mut sink, code, "").await;
            }
        }
        Outcome::TakenOver(reply) => {
            if let Err(session) = reply.send(session) {
                state.parked.park(session, deadline_of(&claims), revocation);
            }
            close_with(&mut sink, close::GOING_AWAY, "The session moved to a new connection").await;
        }
        Outcome::Ended(End::Exit(code)) => {
            let _ = tokio::time::timeout(LAST_WORDS, send_json(&mut sink, &ServerMessage::Exit { code })).await;
            close_with(&mut sink, close::NORMAL, "The session ended").await;
        }
        Outcome::Ended(End::Lost) => close_with(&mut sink, close::OFFLINE, "The machine went offline").await,
        Outcome::Ended(End::Denied) => {
            let text = "The machine's attach password changed: reload the page and enter the new one.".to_string();
            let _ = tokio::time::timeout(LAST_WORDS, send_json(&mut sink, &ServerMessage::Notice { text })).await;
            close_with(&mut sink, close::PASSWORD, "The machine's attach password changed").await;
        }
        Outcome::Expired => {
            close_with(&mut sink, close::EXPIRED, "This link has expired").await;
            state.links.expired(claims.link_id).await;
        }
        Outcome::Revoked => close_with(&mut sink, close::REVOKED, "This link was revoked").await,
        Outcome::Stopping => {
            let text = "The server is restarting; reconnecting...".to_string();
            let _ = tokio::time::timeout(LAST_WORDS, send_json(&mut sink, &ServerMessage::Notice { text })).await;
            close_with(&mut sink, close::GOING_AWAY, "The server is shutting down").await;
        }
    }
}

fn deadline_of(claims: &LinkClaims) -> tokio::time::Instant {
    let left = claims.deadline - OffsetDateTime::now_utc();
    tokio::time::Instant::now() + left.try_into().unwrap_or_default()
}

async fn pump(
    sink: &mut Writer,
    stream: Reader,
    session: &mut LinkSession,
    claims: &LinkClaims,
    revocation: &mut Revocation,
    asked: &mut HandoffRequests,
    stopping: impl Future<Output = ()> + Send,
) -> Outcome {
    let read_only = claims.mode == LinkMode::ReadOnly;
    // Pings are rare: their pongs wait in a one-slot queue, polled only when it was woken.
    let (pong_tx, mut pongs) = tokio::sync::mpsc::channel(1);
    let mut pong_filter = WakeFilter::new();
    let browser = Browser { control: session.port.control.clone(), read_only, pongs: pong_tx };
    let mut reader = AbortOnDrop::spawn(browser.read(stream));
    let deadline = tokio::time::sleep_until(deadline_of(claims));
    // Resolves once: a reconnect wants the session (never, if the request side went away).
    let taken = async {
        match asked.await {
            Ok(reply) => reply,
            Err(_) => std::future::pending().await,
        }
    };
    let revoked = revocation.revoked();
    // Every way the socket ends other than the session's own events, made once and polled only
    // when one of them woke the task: the loop below wakes for every keystroke's echo, and
    // polling the deadline, the revocation, the shutdown, the reader and the handoff each time
    // was about a tenth of the server's work per key (docs/performance.md, issue 18).
    let mut ends = WhenWoken::new(async move {
        tokio::select! {
            left = &mut reader => Outcome::ClientGone { goodbye: left.unwrap_or(None) },
            () = stopping => Outcome::Stopping,
            () = deadline => Outcome::Expired,
            () = revoked => Outcome::Revoked,
            reply = taken => Outcome::TakenOver(reply),
        }
    });
    // Output credit goes back in batches of a quarter window: one Credit frame per PTY read
    // (4 KiB) doubled the frames and wakeups of a busy session, and the agent, granted the
    // other three quarters, never runs dry waiting for it (docs/performance.md).
    let mut unacked = 0usize;
    // Small outputs go to the browser from the agent stream's task while this loop waits
    // with nothing queued (`lane.rs`); the loop files what the lane wrote when it wakes.
    let lane = Lane::new(sink.shared(), CREDIT_BATCH);
    session.port.control.set_output_lane(Some(lane.clone()));
    let outcome = loop {
        lane.open_if(session.port.events.is_empty());
        let woke = tokio::select! {
            event = session.port.events.recv() => Woke::Event(event),
            () = std::future::poll_fn(|cx| lane.poll_rest(cx)) => Woke::Rest,
            Some(ping) = std::future::poll_fn(|cx| pong_filter.poll(cx, |cx| pongs.poll_recv(cx))) => Woke::Ping(ping),
            outcome = &mut ends => break outcome,
        };
        // The lane is closed until the next turn: what it wrote goes first, in the ring and
        // in the credit count, and so does the rest of a frame the socket took only part of.
        let (written, rest) = lane.close(&mut session.ring);
        unacked += written;
        if let Some(rest) = rest
            && let Err(outcome) = guarded(sink.write(&rest.head, &rest.body), &mut ends).await
        {
            break outcome;
        }
        match woke {
            Woke::Event(Some(SessionEvent::Output { offset, data, .. })) => {
                session.ring.push_shared(offset, data.clone());
                if let Err(outcome) = guarded(sink.binary(&data), &mut ends).await {
                    // Not delivered: owed to the agent if the session is parked or moves.
                    if matches!(outcome, Outcome::ClientGone { .. } | Outcome::TakenOver(_)) {
                        session.owed += data.len();
                    }
                    break outcome;
                }
                unacked += data.len();
            }
            Woke::Event(Some(SessionEvent::Opened { .. })) | Woke::Rest => {}
            Woke::Event(Some(SessionEvent::Exited(exit))) if exit.ending.is_denied() => {
                break Outcome::Ended(End::Denied);
            }
            Woke::Event(Some(SessionEvent::Exited(exit))) => break Outcome::Ended(End::Exit(exit.shell_code())),
            Woke::Event(Some(SessionEvent::Lost) | None) => break Outcome::Ended(End::Lost),
            Woke::Ping(ping) => {
                let _ = sink.pong(&ping).await;
            }
        }
        if unacked >= CREDIT_BATCH {
            let _ = session.port.control.consumed(std::mem::take(&mut unacked)).await;
        }
    };
    session.port.control.set_output_lane(None);
    let (written, rest) = lane.detach(&mut session.ring);
    unacked += written;
    // The socket's last words must not follow half a frame.
    if let Some(rest) = rest
        && !matches!(outcome, Outcome::ClientGone { .. })
    {
        let _ = Box::pin(tokio::time::timeout(LAST_WORDS, sink.write(&rest.head, &rest.body))).await;
    }
    // Sent but not yet granted back: owed to the agent if the session is parked or moves.
    session.owed += unacked;
    outcome
}

/// What woke the pump.
enum Woke {
    Event(Option<SessionEvent>),
    /// The output lane left the rest of a frame to write.
    Rest,
    Ping(bytes::Bytes),
}

/// Writes with the socket's ends watched: a browser that stopped reading (a dead connection
/// the kernel still buffers for) must not hold up the deadline, a revocation or a resume. The
/// write goes first: it is done at its first poll almost always. A failed write is the
/// browser gone.
async fn guarded(
    write: impl Future<Output = std::io::Result<()>>,
    ends: &mut (impl Future<Output = Outcome> + Unpin),
) -> Result<(), Outcome> {
    tokio::select! {
        biased;
        sent = write => sent.map_err(|_| Outcome::ClientGone { goodbye: None }),
        outcome = ends => Err(outcome),
    }
}

/// Browser -> shell. Runs beside the output pump so waiting for input credit never stalls
/// output (which could deadlock a shell blocked on a full output pipe).
struct Browser {
    control: std::sync::Arc<dyn SessionControl>,
    read_only: bool,
    /// Pings' payloads, for the pump to answer.
    pongs: tokio::sync::mpsc::Sender<bytes::Bytes>,
}

impl Browser {
    /// Reads until the browser leaves: the close code its leaving deserves as an answer (its
    /// own close frame's, or the protocol error's), `None` when the connection just dropped.
    async fn read(self, mut stream: Reader) -> Option<u16> {
        loop {
            match stream.next().await {
                Ok(Some(Message::Close(code))) => return Some(code),
                Ok(Some(message)) => {
                    if !self.take(message).await {
                        return None;
                    }
                }
                Ok(None) => return None,
                Err(ws::ReadError::Frame(e)) => {
                    tracing::debug!(error = %e, "browser broke the WebSocket protocol");
                    return Some(e.close_code());
                }
                Err(ws::ReadError::Io(_)) => return None,
            }
        }
    }

    /// One message; false when the session can take no more input.
    async fn take(&self, message: Message) -> bool {
        match message {
            Message::Binary(data) if !self.read_only => {
                // Most keystrokes go at once, without `input`'s boxed future.
                if let Some(data) = self.control.try_input(data) {
                    return self.control.input(data).await.is_ok();
                }
            }
            Message::Text(text) => match serde_json::from_str::<ClientMessage>(&text) {
                Ok(ClientMessage::Resize { cols, rows }) if cols > 0 && rows > 0 => {
                    let _ = self.control.resize(cols, rows).await;
                }
                _ => tracing::debug!("ignored a malformed control message"),
            },
            // A ping not answered because one is already waiting: the newest is enough.
            Message::Ping(payload) => {
                let _ = self.pongs.try_send(payload);
            }
            _ => {}
        }
        true
    }
}
