//! The Machines page: the active fleet's machines with their state, a filter box (the CLI's
//! resolver), the fleet switcher, and server-sent events when a machine comes or goes.

use std::collections::HashMap;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use super::ConsoleState;
use super::auth::Member;
use super::pages::{MachineView, Nav, link_status, render};
use crate::core::ids::{FleetId, MachineId};
use crate::core::resolver::{Candidate, resolve};
use crate::server::http::server_error;
use crate::store::Machine;

/// How often the event stream looks at the fleet's machines: 1 s.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How long the page waits for a machine to list its sessions: 1 s.
const SESSIONS_WAIT: Duration = Duration::from_secs(1);

#[derive(Template)]
#[template(path = "console_machines.html")]
struct MachinesPage {
    nav: Nav,
    q: String,
    machines: Vec<MachineView>,
    total: usize,
}

/// `?q=` on the Machines page.
#[derive(Deserialize)]
pub(crate) struct FilterQuery {
    #[serde(default)]
    q: String,
}

/// `GET /console`.
pub(crate) async fn show_machines(
    State(state): State<ConsoleState>,
    session: Session,
    Query(filter): Query<FilterQuery>,
) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let machines = match state.store.list_machines(member.fleet.id).await {
        Ok(m) => m,
        Err(e) => return server_error(e),
    };
    let shown: Vec<Machine> = matching(&filter.q, &machines).into_iter().cloned().collect();
    let views = match machine_views(&state, member.fleet.id, &shown).await {
        Ok(v) => v,
        Err(e) => return server_error(e),
    };
    let page = MachinesPage {
        nav: Nav::new(&state, &member, "machines"),
        q: filter.q,
        machines: views,
        total: machines.len(),
    };
    render(StatusCode::OK, &page)
}

/// The machines `query` names, as the CLI would resolve it: the one it resolves to, or
/// else every machine whose hostname or display name contains it or whose id starts with it.
pub(crate) fn matching<'a>(query: &str, machines: &'a [Machine]) -> Vec<&'a Machine> {
    let q = query.trim().to_lowercase();
    if q.is_empty() {
        return machines.iter().collect();
    }
    if let Ok(one) = resolve(&q, machines) {
        return vec![one];
    }
    let contains = |s: &str| s.to_lowercase().contains(&q);
    machines
        .iter()
        .filter(|m| contains(m.hostname()) || m.display_name().is_some_and(contains) || m.id().starts_with(&q))
        .collect()
}

/// Rows for `machines`: their live shell sessions (asked of online machines at once, briefly)
/// and their links.
pub(crate) async fn machine_views(
    state: &ConsoleState,
    fleet: FleetId,
    machines: &[Machine],
) -> anyhow::Result<Vec<MachineView>> {
    let links = state.store.list_links(fleet, None).await?;
    let mut per_machine: HashMap<MachineId, (usize, usize)> = HashMap::new();
    for link in links.iter().filter(|l| link_status(l) == "live") {
        let entry = per_machine.entry(link.machine_id).or_default();
        entry.0 += 1;
        entry.1 += state.links.active_sessions(link.id);
    }
    let sessions = futures_util::future::join_all(machines.iter().map(|m| session_count(state, m))).await;
    Ok(machines
        .iter()
        .zip(sessions)
        .map(|(m, n)| {
            let (links, viewers) = per_machine.get(&m.id).copied().unwrap_or_default();
            MachineView::new(m, n, links, viewers)
        })
        .collect())
}

async fn session_count(state: &ConsoleState, m: &Machine) -> Option<usize> {
    if !m.online {
        return None;
    }
    let listed = tokio::time::timeout(SESSIONS_WAIT, state.router.list_sessions(m.id)).await;
    listed.ok()?.ok().map(|s| s.len())
}

/// `POST /console/fleet` form.
#[derive(Deserialize)]
pub(crate) struct FleetForm {
    fleet: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /console/fleet`: the fleet switcher.
pub(crate) async fn switch_fleet(
    State(state): State<ConsoleState>,
    session: Session,
    Form(form): Form<FleetForm>,
) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    if let Err(resp) = member.check_csrf(&state, &form.csrf) {
        return resp;
    }
    let Some(fleet) = member.fleets.iter().find(|m| m.fleet.id.to_string() == form.fleet) else {
        return super::pages::message(
            &state,
            StatusCode::FORBIDDEN,
            "Not a member",
            "You do not belong to that fleet.",
        );
    };
    if let Err(resp) = member.choose_fleet(fleet.fleet.id).await {
        return resp;
    }
    Redirect::to("/console").into_response()
}

/// `GET /console/events`: a `machines` event with every row of the fleet whenever a machine
/// comes, goes, or changes state. Ends when the member loses the fleet or the server stops.
pub(crate) async fn machine_events(State(state): State<ConsoleState>, session: Session) -> Response {
    let member = match Member::load(&state, session).await {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let (user, fleet) = (member.user.id, member.fleet.id);
    let mut stopping = state.stopping.clone();
    let stream = async_stream::stream! {
        let mut last: Option<Vec<(MachineId, bool)>> = None;
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.wait_for(|s| *s) => break,
            }
            let still_member = state.store.memberships(user).await.is_ok_and(|ms| ms.iter().any(|m| m.fleet.id == fleet));
            let Ok(machines) = state.store.list_machines(fleet).await else { break };
            if !still_member {
                break;
            }
            let key: Vec<(MachineId, bool)> = machines.iter().map(|m| (m.id, m.online)).collect();
            if last.as_ref() == Some(&key) {
                continue;
            }
            last = Some(key);
            let Ok(views) = machine_views(&state, fleet, &machines).await else { break };
            match Event::default().event("machines").json_data(&views) {
                Ok(event) => yield Ok::<_, std::convert::Infallible>(event),
                Err(_) => break,
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(id: &str, hostname: &str, display: Option<&str>) -> Machine {
        Machine {
            id: id.parse().unwrap(),
            fleet_id: FleetId::random(),
            hostname: hostname.into(),
            display_name: display.map(str::to_string),
            os: String::new(),
            arch: String::new(),
            online: true,
            last_seen: None,
        }
    }

    #[test]
    fn the_filter_follows_the_resolver_then_falls_back_to_substrings() {
        let fleet = [
            machine("3f2a0000-0000-4000-8000-000000000001", "web-1", Some("Audi VPS")),
            machine("3f2b0000-0000-4000-8000-000000000002", "web-2", None),
            machine("9c000000-0000-4000-8000-000000000003", "db", None),
        ];
        let names = |q: &str| matching(q, &fleet).iter().map(|m| m.hostname.clone()).collect::<Vec<_>>();
        assert_eq!(names(""), ["web-1", "web-2", "db"]);
        assert_eq!(names("audi vps"), ["web-1"], "exact display name resolves");
        assert_eq!(names("9c"), ["db"], "unique id prefix resolves");
        assert_eq!(names("3f2"), ["web-1", "web-2"], "an ambiguous prefix lists its candidates");
        assert_eq!(names("WEB"), ["web-1", "web-2"], "substrings, case-insensitive");
        assert!(names("nothing").is_empty());
    }
}
