//! Rows to domain values, shared by the backends: the select lists both SQL dialects read alike,
//! and conversions written over `Cols`, the few typed column reads both drivers offer, so a
//! SQLite row and a PostgreSQL row become the same `Machine` through one function.

use std::str::FromStr;

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::grants::DeviceGrant;
use super::identity::{Fleet, Membership, User};
use super::links::LinkRow;
use super::machines::Machine;
use super::{StoreError, parse_col};

/// The columns `link` reads, with the join that brings the creator's email.
pub(super) const LINK_COLUMNS: &str =
    "l.id, l.fleet_id, l.machine_id, l.created_by, u.email, l.created_at, l.expires_at,
     l.read_only, l.max_opens, l.session_id, l.revoked_at, l.opens
     FROM share_links l JOIN users u ON u.id = l.created_by";

/// The columns `grant` reads, in the `device_grants` table.
pub(super) const GRANT_COLUMNS: &str =
    "device_code_hash, user_code, client_name, client_host, expires_at, interval_secs, last_poll_at, status, user_id";

/// Typed reads by column name; every sqlx row whose database decodes these types has them.
pub(super) trait Cols {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A flag: BOOLEAN in PostgreSQL, 0/1 INTEGER in SQLite.
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;

    /// A column parsed into a domain type (ids, roles, statuses).
    fn parsed<T: FromStr>(&self, table: &'static str, col: &str) -> Result<T, StoreError> {
        parse_col(table, &self.text(col)?)
    }
}

impl<R> Cols for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        self.try_get(col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(col)
    }
    fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        self.try_get(col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(col)
    }
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
        self.try_get(col)
    }
}

/// A `users` row (`id`, `email`).
pub(super) fn user(r: &impl Cols) -> Result<User, StoreError> {
    Ok(User { id: r.parsed("users", "id")?, email: r.text("email")? })
}

/// A `fleets` row (`id`, `name`).
pub(super) fn fleet(r: &impl Cols) -> Result<Fleet, StoreError> {
    Ok(Fleet { id: r.parsed("fleets", "id")?, name: r.text("name")? })
}

/// A fleet joined with a membership's `role`.
pub(super) fn membership(r: &impl Cols) -> Result<Membership, StoreError> {
    Ok(Membership { fleet: fleet(r)?, role: r.parsed("memberships", "role")? })
}

/// A `machines` row read with `MACHINE_COLUMNS`.
pub(super) fn machine(r: &impl Cols) -> Result<Machine, StoreError> {
    Ok(Machine {
        id: r.parsed("machines", "id")?,
        fleet_id: r.parsed("machines", "fleet_id")?,
        hostname: r.text("hostname")?,
        display_name: r.opt_text("display_name")?,
        os: r.text("os")?,
        arch: r.text("arch")?,
        online: r.flag("online")?,
        last_seen: r.opt_int("last_seen")?,
    })
}

/// An enrollment token's `used_at` and `expires_at`, to tell why it was refused.
pub(super) fn token_state(r: &impl Cols) -> Result<(Option<i64>, i64), StoreError> {
    Ok((r.opt_int("used_at")?, r.int("expires_at")?))
}

/// A `share_links` row read with `LINK_COLUMNS`.
pub(super) fn link(r: &impl Cols) -> Result<LinkRow, StoreError> {
    Ok(LinkRow {
        id: r.parsed("share_links", "id")?,
        fleet_id: r.parsed("share_links", "fleet_id")?,
        machine_id: r.parsed("share_links", "machine_id")?,
        created_by: r.parsed("share_links", "created_by")?,
        created_by_email: r.text("email")?,
        created_at: r.int("created_at")?,
        expires_at: r.int("expires_at")?,
        read_only: r.flag("read_only")?,
        max_opens: r.opt_int("max_opens")?,
        session_id: r.opt_text("session_id")?,
        revoked_at: r.opt_int("revoked_at")?,
        opens: r.int("opens")?,
    })
}

/// A revoked link's id and deadline (`id`, `expires_at`).
pub(super) fn revocation(r: &impl Cols) -> Result<(crate::core::ids::LinkId, i64), StoreError> {
    Ok((r.parsed("share_links", "id")?, r.int("expires_at")?))
}

/// One line of a link's audit trail (`at`, `actor`, `action`, `detail`).
pub(super) fn audit_line(r: &impl Cols) -> Result<(i64, String, String, String), StoreError> {
    Ok((r.int("at")?, r.text("actor")?, r.text("action")?, r.text("detail")?))
}

/// A `device_grants` row read with `GRANT_COLUMNS`.
pub(super) fn grant(r: &impl Cols) -> Result<DeviceGrant, StoreError> {
    Ok(DeviceGrant {
        device_code_hash: r.text("device_code_hash")?,
        user_code: r.text("user_code")?,
        client_name: r.text("client_name")?,
        client_host: r.text("client_host")?,
        expires_at: r.int("expires_at")?,
        interval_secs: r.int("interval_secs")?,
        last_poll_at: r.opt_int("last_poll_at")?,
        status: r.parsed("device_grants", "status")?,
        user_id: r.opt_text("user_id")?.map(|u| parse_col("device_grants", &u)).transpose()?,
    })
}
