//! The console's pages (askama) and what they show: the navigation every page carries, and
//! machines and links as rows.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::ConsoleState;
use super::auth::Member;
use crate::core::clock::rfc3339;
use crate::store::{LinkRow, Machine, Role};

pub(crate) use crate::server::http::render;

/// The bar at the top of every signed-in page.
pub(crate) struct Nav {
    pub(crate) css: String,
    pub(crate) js: String,
    pub(crate) qr_js: String,
    pub(crate) email: String,
    pub(crate) role: String,
    pub(crate) csrf: String,
    pub(crate) fleet: String,
    /// (id, name, is the active one)
    pub(crate) fleets: Vec<(String, String, bool)>,
    /// `machines` or `links`: which tab is current.
    pub(crate) section: &'static str,
}

impl Nav {
    pub(crate) fn new(state: &ConsoleState, member: &Member, section: &'static str) -> Self {
        let fleets = member
            .fleets
            .iter()
            .map(|m| (m.fleet.id.to_string(), m.fleet.name.clone(), m.fleet.id == member.fleet.id))
            .collect();
        Self {
            css: state.asset("console.css"),
            js: state.asset("console.js"),
            qr_js: state.asset("vendor/qrcode.js"),
            email: member.user.email.clone(),
            role: member.role.to_string(),
            csrf: member.csrf.clone(),
            fleet: member.fleet.name.clone(),
            fleets,
            section,
        }
    }
}

#[derive(Template)]
#[template(path = "console_login.html")]
pub(crate) struct LoginPage {
    css: String,
    csrf: String,
    error: String,
}

impl LoginPage {
    pub(crate) fn new(state: &ConsoleState, csrf: String, error: String) -> Self {
        Self { css: state.asset("console.css"), csrf, error }
    }
}

#[derive(Template)]
#[template(path = "console_message.html")]
struct MessagePage {
    css: String,
    title: String,
    message: String,
}

/// A page that only says something (errors, refusals) with `status`.
pub(crate) fn message(state: &ConsoleState, status: StatusCode, title: &str, message: &str) -> Response {
    let page = MessagePage { css: state.asset("console.css"), title: title.into(), message: message.into() };
    render(status, &page)
}

/// A machine as a row of the Machines page (and the head of its own page).
#[derive(serde::Serialize)]
pub(crate) struct MachineView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) hostname: String,
    pub(crate) online: bool,
    pub(crate) last_seen: String,
    /// Shell sessions running on it (`-` when offline or unknown).
    pub(crate) sessions: String,
    /// Links that can still be opened.
    pub(crate) links: usize,
    /// Sockets open through its links right now.
    pub(crate) viewers: usize,
}

impl MachineView {
    pub(crate) fn new(m: &Machine, sessions: Option<usize>, links: usize, viewers: usize) -> Self {
        Self {
            id: m.id.to_string(),
            name: m.display_name.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| m.hostname.clone()),
            hostname: m.hostname.clone(),
            online: m.online,
            last_seen: m.last_seen.map(rfc3339).unwrap_or_else(|| "never".into()),
            sessions: sessions.map_or_else(|| "-".into(), |n| n.to_string()),
            links,
            viewers,
        }
    }
}

/// A share link as a row.
pub(crate) struct LinkView {
    pub(crate) id: String,
    pub(crate) machine_id: String,
    pub(crate) machine: String,
    pub(crate) created_by: String,
    pub(crate) expires_at: String,
    /// `live`, `expired` or `revoked`.
    pub(crate) status: &'static str,
    pub(crate) read_only: bool,
    pub(crate) opens: String,
    pub(crate) viewers: usize,
    pub(crate) can_revoke: bool,
}

impl LinkView {
    pub(crate) fn new(link: &LinkRow, machine: &str, viewers: usize, can_revoke: bool) -> Self {
        let status = link_status(link);
        Self {
            id: link.id.to_string(),
            machine_id: link.machine_id.to_string(),
            machine: machine.to_string(),
            created_by: link.created_by_email.clone(),
            expires_at: rfc3339(link.expires_at),
            status,
            read_only: link.read_only,
            opens: match link.max_opens {
                Some(max) => format!("{}/{max}", link.opens),
                None => link.opens.to_string(),
            },
            viewers,
            can_revoke: can_revoke && status == "live",
        }
    }
}

/// `live`, `expired` or `revoked`.
pub(crate) fn link_status(link: &LinkRow) -> &'static str {
    if link.revoked_at.is_some() {
        "revoked"
    } else if link.expires_at <= crate::core::clock::now() {
        "expired"
    } else {
        "live"
    }
}

/// Whether `member` may revoke `link`: admins any in the fleet, others their own.
pub(crate) fn may_revoke(member: &Member, link: &LinkRow) -> bool {
    member.role >= Role::Admin || (member.role >= Role::Member && link.created_by == member.user.id)
}
