//! A machine's page (its terminal button, its shell sessions, a one-shot command, a
//! share-link form, its links) and the Links page
//! (every link of the fleet for admins, their own for members, live viewers, revocation and
//! the audit log). Revoking goes through the link registry, so open sockets close with 4002
//! at once.

use std::collections::HashMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::ConsoleState;
use super::auth::{CsrfForm, Member};
use super::pages::{LinkView, MachineView, Nav, link_status, may_revoke, message, render};
use super::sessions::{SessionsView, sessions_view};
use super::terminal::audit;
use crate::core::clock::rfc3339;
use crate::core::ids::{LinkId, MachineId};
use crate::server::http::server_error;
use crate::server::links::LinkSpec;
use crate::store::{LinkRow, Machine, Role};

/// Audit events the Links page shows.
const AUDIT_ROWS: i64 = 100;

/// A link just made: shown once, with a copy button and a QR code.
struct MintedView {
    id: String,
    url: String,
    expires_at: String,
    read_only: bool,
}

#[derive(Template)]
#[template(path = "console_machine.html")]
struct MachinePage {
    nav: Nav,
    m: MachineView,
    can_use: bool,
    links: Vec<LinkView>,
    any_revocable: bool,
    minted: Option<MintedView>,
    error: String,
    sessions: SessionsView,
    /// The unlock endpoint the page's password form posts to.
    unlock_url: String,
}

struct AuditView {
    at: String,
    actor: String,
    action: String,
    machine: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console_links.html")]
struct LinksPage {
    nav: Nav,
    links: Vec<LinkView>,
    audit: Vec<AuditView>,
    show_audit: bool,
}

/// The machine with this id in the member's fleet; other fleets' machines do not exist.
pub(crate) async fn fleet_machine(state: &ConsoleState, member: &Member, id: &str) -> Result<Machine, Response> {
    let not_found = || message(state, StatusCode::NOT_FOUND, "No such machine", "It is not in this fleet.");
    let id: MachineId = id.parse().map_err(|_| not_found())?;
    match state.store.machine(id).await {
        Ok(Some(m)) if m.fleet_id == member.fleet.id => Ok(m),
        Ok(_) => Err(not_found()),
        Err(e) => Err(server_error(e)),
    }
}

/// Links `member` may see: admins every one of the fleet, members their own, viewers none.
fn visible(member: &Member, links: Vec<LinkRow>) -> Vec<LinkRow> {
    links
        .into_iter()
        .filter(|l| member.role >= Role::Admin || (member.role >= Role::Member && l.created_by == member.user.id))
        .collect()
}

fn link_views(
    state: &ConsoleState,
    member: &Member,
    links: &[LinkRow],
    names: &HashMap<MachineId, String>,
) -> Vec<LinkView> {
    links
        .iter()
        .map(|l| {
            let name = names.get(&l.machine_id).cloned().unwrap_or_else(|| l.machine_id.to_string());
            LinkView::new(l, &name, state.links.active_sessions(l.id), may_revoke(member, l))
        })
        .collect()
}

async fn machine_page(
    state: &ConsoleState,
    member: &Member,
    machine: &Machine,
    minted: Option<MintedView>,
    error: String,
) -> Response {
    let links = match state.store.list_links(member.fleet.id, Some(machine.id)).await {
        Ok(l) => visible(member, l),
        Err(e) => return server_error(e),
    };
    let views = match super::machines::machine_views(state, member.fleet.id, std::slice::from_ref(machine)).await {
        Ok(v) => v,
        Err(e) => return server_error(e),
    };
    let Some(m) = views.into_iter().next() else {
        return server_error("no view of the machine");
    };
    let names = HashMap::from([(machine.id, m.name.clone())]);
    let links = link_views(state, member, &links, &names);
    let status = if error.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    let sessions = sessions_view(state, member, machine).await;
    let page = MachinePage {
        sessions,
        unlock_url: format!("/console/m/{}/terminal/unlock", machine.id),
        nav: Nav::new(state, member, "machines"),
        can_use: member.role >= Role::Member,
        any_revocable: links.iter().any(|l| l.can_revoke),
        m,
        links,
        minted,
        error,
    };
    render(status, &page)
}

/// `GET /console/m/{machine}`.
pub(crate) async fn show_machine(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    match fleet_machine(&state, &member, &id).await {
        Ok(machine) => machine_page(&state, &member, &machine, None, String::new()).await,
        Err(resp) => resp,
    }
}

/// `POST /console/m/{machine}/share` form.
#[derive(Deserialize)]
pub(crate) struct ShareForm {
    #[serde(default)]
    ttl: String,
    #[serde(default)]
    read_only: Option<String>,
    #[serde(default)]
    max_opens: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /console/m/{machine}/share`: makes a link and shows it once.
pub(crate) async fn create_link(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<ShareForm>,
) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if let Err(resp) = member.check_csrf(&state, &form.csrf).and(member.require(&state, Role::Member, "sharing")) {
        return resp;
    }
    let machine = match fleet_machine(&state, &member, &id).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let ttl = if form.ttl.trim().is_empty() { "24h" } else { form.ttl.trim() };
    let Ok(ttl) = crate::core::duration::parse(ttl) else {
        let text = format!("{ttl:?} is not a duration: write it like 90s, 15m, 2h or 7d");
        return machine_page(&state, &member, &machine, None, text).await;
    };
    let max_opens = match form.max_opens.trim() {
        "" => None,
        n => match n.parse::<i64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return machine_page(&state, &member, &machine, None, "Max opens is a whole number above 0".into())
                    .await;
            }
        },
    };
    let read_only = form.read_only.is_some();
    let spec = LinkSpec {
        user: member.user.id,
        fleet: member.fleet.id,
        machine: machine.id,
        ttl,
        read_only,
        max_opens,
        session: None,
    };
    let minted = match state.links.create(spec).await {
        Ok(m) => m,
        Err(crate::server::links::LinkRequestError::BadTtl { max }) => {
            let text = format!("The lifetime must be between 5s and {max}");
            return machine_page(&state, &member, &machine, None, text).await;
        }
        Err(e) => return server_error(e),
    };
    let detail = format!("link={} read_only={read_only}", minted.id);
    audit(&state, &member, &machine, "console.link.create", detail).await;
    let view = MintedView {
        id: minted.id.to_string(),
        url: format!("{}/s/{}", state.public_url, minted.token.expose()),
        expires_at: rfc3339(minted.expires_at),
        read_only,
    };
    machine_page(&state, &member, &machine, Some(view), String::new()).await
}

/// `GET /console/links`.
pub(crate) async fn show_links(State(state): State<ConsoleState>, session: Session) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let (links, machines) =
        match (state.store.list_links(member.fleet.id, None).await, state.store.list_machines(member.fleet.id).await) {
            (Ok(l), Ok(m)) => (visible(&member, l), m),
            (Err(e), _) | (_, Err(e)) => return server_error(e),
        };
    let names: HashMap<MachineId, String> = machines
        .iter()
        .map(|m| (m.id, m.display_name.clone().filter(|d| !d.is_empty()).unwrap_or(m.hostname.clone())))
        .collect();
    let show_audit = member.role >= Role::Admin;
    let audit = if show_audit {
        match state.store.fleet_audit(member.fleet.id, AUDIT_ROWS).await {
            Ok(rows) => rows
                .into_iter()
                .map(|r| AuditView {
                    at: rfc3339(r.at),
                    actor: r.actor,
                    action: r.action,
                    machine: r
                        .machine_id
                        .and_then(|id| id.parse().ok().and_then(|id: MachineId| names.get(&id).cloned()).or(Some(id)))
                        .unwrap_or_default(),
                    detail: match r.link_id {
                        Some(link) if !r.detail.contains(&link) => format!("link={link} {}", r.detail),
                        _ => r.detail,
                    },
                })
                .collect(),
            Err(e) => return server_error(e),
        }
    } else {
        vec![]
    };
    let links = link_views(&state, &member, &links, &names);
    render(StatusCode::OK, &LinksPage { nav: Nav::new(&state, &member, "links"), links, audit, show_audit })
}

/// Revokes `links` (the ones `member` may), audits it, and goes back to `back`.
async fn revoke(state: &ConsoleState, member: &Member, links: Vec<LinkRow>, back: &str) -> Response {
    let allowed: Vec<LinkRow> =
        links.into_iter().filter(|l| may_revoke(member, l) && link_status(l) == "live").collect();
    if allowed.is_empty() {
        return message(state, StatusCode::FORBIDDEN, "Nothing to revoke", "No live link here that you may revoke.");
    }
    let revoked = match state.links.revoke(member.user.id, &allowed).await {
        Ok(r) => r,
        Err(e) => return server_error(e),
    };
    for link in allowed.iter().filter(|l| revoked.contains(&l.id)) {
        let event = crate::store::AuditEvent {
            actor: &member.user.email,
            action: "console.link.revoke",
            fleet_id: Some(member.fleet.id.to_string()),
            machine_id: Some(link.machine_id.to_string()),
            link_id: Some(link.id.to_string()),
            detail: "surface=web".into(),
        };
        if let Err(e) = state.store.audit(event).await {
            tracing::warn!(error = %e, "could not record an audit event");
        }
    }
    Redirect::to(back).into_response()
}

/// `POST /console/links/{link}/revoke`.
pub(crate) async fn revoke_link(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if let Err(resp) = member.check_csrf(&state, &form.csrf) {
        return resp;
    }
    let not_found = || message(&state, StatusCode::NOT_FOUND, "No such link", "It is not in this fleet.");
    let Ok(id) = id.parse::<LinkId>() else {
        return not_found();
    };
    match state.store.link(id).await {
        Ok(Some(link)) if link.fleet_id == member.fleet.id => {
            revoke(&state, &member, vec![link], "/console/links").await
        }
        Ok(_) => not_found(),
        Err(e) => server_error(e),
    }
}

/// `POST /console/m/{machine}/revoke`: every live link of the machine the member may revoke.
pub(crate) async fn revoke_machine_links(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if let Err(resp) = member.check_csrf(&state, &form.csrf) {
        return resp;
    }
    let machine = match fleet_machine(&state, &member, &id).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    match state.store.list_links(member.fleet.id, Some(machine.id)).await {
        Ok(links) => revoke(&state, &member, links, &format!("/console/m/{}", machine.id)).await,
        Err(e) => server_error(e),
    }
}
