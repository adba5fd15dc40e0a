//! The share-link page (askama) and the error pages: the one place that maps a link's
//! verdict to an HTTP status (404 malformed or tampered, 410 expired or revoked).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{HttpState, render, server_error};
use crate::core::link_token::{LinkClaims, LinkError, LinkMode};

#[derive(Template)]
#[template(path = "share.html")]
struct LinkPage {
    machine_name: String,
    shared_by: String,
    read_only: bool,
    expires_at: String,
    deadline_ms: i64,
    xterm_js: String,
    xterm_css: String,
    fit_js: String,
    weblinks_js: String,
    share_js: String,
    share_css: String,
    keybar_js: String,
    keybar_css: String,
}

#[derive(Template)]
#[template(path = "link_error.html")]
struct LinkErrorPage {
    title: String,
    message: String,
    css: String,
}

/// The error page for a link that cannot be used.
pub(crate) fn link_error(state: &HttpState, error: &LinkError) -> Response {
    let (status, title, message) = match error {
        LinkError::Expired { .. } => (
            StatusCode::GONE,
            "This link has expired",
            "The person who shared this terminal set a time limit, and it has passed.",
        ),
        LinkError::Revoked => (StatusCode::GONE, "This link was revoked", "Access through this link was withdrawn."),
        LinkError::Malformed | LinkError::UnknownKey | LinkError::BadSignature => {
            (StatusCode::NOT_FOUND, "This link is not valid", "Check that you copied the whole link.")
        }
    };
    let page = LinkErrorPage { title: title.into(), message: message.into(), css: state.css() };
    render(status, &page)
}

/// A link that verified but whose row or machine is gone is treated as not valid.
fn not_valid(state: &HttpState) -> Response {
    link_error(state, &LinkError::Malformed)
}

/// `GET /s/{token}`: the terminal page.
pub(crate) async fn open_link_page(State(state): State<HttpState>, Path(token): Path<String>) -> Response {
    let claims = match state.links.verify(&token) {
        Ok(c) => c,
        Err(e) => return link_error(&state, &e),
    };
    match page_for(&state, &claims).await {
        Ok(Some(page)) => render(StatusCode::OK, &page),
        Ok(None) => not_valid(&state),
        Err(e) => server_error(format!("share page of link {}: {e:#}", claims.link_id)),
    }
}

async fn page_for(state: &HttpState, claims: &LinkClaims) -> anyhow::Result<Option<LinkPage>> {
    let link = state.links.get(claims.link_id).await?;
    let (Some(link), Some(machine)) = (link, state.store.machine(claims.machine_id).await?) else {
        return Ok(None);
    };
    let a = &state.assets;
    Ok(Some(LinkPage {
        machine_name: machine.display_name.unwrap_or(machine.hostname),
        shared_by: link.created_by_email,
        read_only: claims.mode == LinkMode::ReadOnly,
        expires_at: crate::core::clock::rfc3339(link.expires_at),
        deadline_ms: claims.deadline.unix_timestamp() * 1000,
        xterm_js: a.url("vendor/xterm.js"),
        xterm_css: a.url("vendor/xterm.css"),
        fit_js: a.url("vendor/addon-fit.js"),
        weblinks_js: a.url("vendor/addon-web-links.js"),
        share_js: a.url("share.js"),
        share_css: a.url("share.css"),
        keybar_js: a.url("keybar.js"),
        keybar_css: a.url("keybar.css"),
    }))
}
