//! Static files (xterm.js, the page's script and style) embedded in the binary with
//! rust-embed and served under fingerprinted URLs (`/assets/<hash>/<path>`), so they can be
//! cached for a year and a new build never meets a stale file. No CDN.

use std::collections::HashMap;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::core::secret::hex;

#[derive(RustEmbed)]
#[folder = "static/"]
#[exclude = "*.sh"]
struct Static;

/// Path -> fingerprinted URL, computed once at start-up.
#[derive(Debug, Default)]
pub(crate) struct AssetIndex {
    urls: HashMap<String, String>,
}

fn fingerprint(path: &str) -> Option<String> {
    Static::get(path).map(|f| hex(&f.metadata.sha256_hash()[..8]))
}

impl AssetIndex {
    /// Fingerprints every embedded file.
    pub(crate) fn build() -> Self {
        let urls = Static::iter()
            .filter_map(|p| fingerprint(&p).map(|h| (p.to_string(), format!("/assets/{h}/{p}"))))
            .collect();
        Self { urls }
    }

    /// The URL of an embedded file (empty when it does not exist, which a test catches).
    pub(crate) fn url(&self, path: &str) -> String {
        self.urls.get(path).cloned().unwrap_or_default()
    }
}

/// `GET /assets/{hash}/{*path}`.
pub(crate) async fn serve_asset(Path((hash, path)): Path<(String, String)>) -> Response {
    let Some(file) = Static::get(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if hex(&file.metadata.sha256_hash()[..8]) != hash {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mime = file.metadata.mimetype().to_string();
    let headers =
        [(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "public, max-age=31536000, immutable".to_string())];
    (headers, file.data.into_owned()).into_response()
}
