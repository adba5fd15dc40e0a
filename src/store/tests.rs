//! The store's behaviour, one function per behaviour over a `Store`, each run against both
//! backends: SQLite in a temporary folder and PostgreSQL in a fresh database of a throwaway
//! cluster (`tests/common/postgres.rs`, shared with the integration tests).

#[path = "../../tests/common/postgres.rs"]
mod pg_cluster;

use std::sync::Arc;

use super::*;
use crate::core::clock::now;
use crate::core::ids::{FleetId, LinkId, MachineId, UserId};

/// A store of each backend, with what keeps it alive (the SQLite folder).
async fn sqlite() -> (Store, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    (open(dir.path()).await.unwrap(), Some(dir))
}

async fn postgres() -> (Store, Option<tempfile::TempDir>) {
    let url = pg_cluster::fresh_database().unwrap();
    (Database::choose(Some(&url), std::path::Path::new("/nonexistent")).unwrap().connect().await.unwrap(), None)
}

/// Runs each behaviour once per backend: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (store, _dir) = super::sqlite().await;
                super::$name(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let (store, _dir) = super::postgres().await;
                super::$name(store).await;
            }
        }
    )*};
}

on_both_backends!(
    users_are_found_by_email_whatever_its_case,
    the_first_user_is_the_first_created,
    fleets_memberships_and_roles,
    tokens_live_until_expiry_or_revocation,
    a_token_family_is_revoked_as_one,
    an_enrollment_token_enrolls_exactly_one_machine,
    racing_enrollments_with_one_token_make_one_machine,
    machines_go_online_and_offline,
    links_are_stored_listed_and_revoked,
    racing_opens_never_pass_max_opens,
    device_grants_move_once_and_passwords_are_kept,
    the_purge_deletes_what_ended_and_keeps_the_rest,
    revocations_and_secrets_are_broadcast_in_order,
    audit_events_keep_their_surface_and_list_by_machine_actor_and_time,
);

/// A user who owns a new fleet.
async fn owner(store: &Store) -> (UserId, FleetId) {
    let user = store.create_user("owner@example.com").await.unwrap();
    let fleet = store.fleet_named("default").await.unwrap();
    store.set_membership(user.id, fleet.id, Role::Owner).await.unwrap();
    (user.id, fleet.id)
}

/// A machine enrolled in `fleet` with a fresh token.
async fn enrolled(store: &Store, user: UserId, fleet: FleetId, hostname: &str) -> Machine {
    let token = format!("tok-{hostname}");
    store.create_enroll_token(&token, fleet, user, now() + 600).await.unwrap();
    let info =
        MachineInfo { hostname: hostname.into(), os: "linux".into(), arch: "x86_64".into(), ..Default::default() };
    store.enroll_machine(&token, &format!("cred-{hostname}"), &info).await.unwrap()
}

async fn users_are_found_by_email_whatever_its_case(store: Store) {
    let ann = store.create_user("Ann@Example.com").await.unwrap();
    let found = store.user_by_email("ann@example.COM").await.unwrap().unwrap();
    assert_eq!(found.id, ann.id);
    assert_eq!(found.email, "Ann@Example.com", "stored as given");
    assert!(store.create_user("ANN@example.com").await.is_err(), "one account per email, whatever its case");
    assert_eq!(store.user(ann.id).await.unwrap().unwrap().email, "Ann@Example.com");
    assert!(store.user_by_email("bob@example.com").await.unwrap().is_none());
    assert!(store.user(UserId::random()).await.unwrap().is_none());
}

async fn the_first_user_is_the_first_created(store: Store) {
    assert!(store.first_user().await.unwrap().is_none());
    // Created within one second: the order must not depend on the random ids.
    let first = store.create_user("first@example.com").await.unwrap();
    for n in 0..5 {
        store.create_user(&format!("later{n}@example.com")).await.unwrap();
    }
    assert_eq!(store.first_user().await.unwrap().unwrap().id, first.id);
}

async fn fleets_memberships_and_roles(store: Store) {
    let (user, fleet) = owner(&store).await;
    assert_eq!(store.fleet_named("default").await.unwrap().id, fleet, "found, not made again");
    let ops = store.fleet_named("ops").await.unwrap();
    store.set_membership(user, ops.id, Role::Viewer).await.unwrap();
    store.set_membership(user, ops.id, Role::Admin).await.unwrap();
    let held: Vec<(String, Role)> =
        store.memberships(user).await.unwrap().into_iter().map(|m| (m.fleet.name, m.role)).collect();
    assert_eq!(held, [("default".to_string(), Role::Owner), ("ops".to_string(), Role::Admin)]);
    let other = store.create_user("other@example.com").await.unwrap();
    assert!(store.memberships(other.id).await.unwrap().is_empty());
}

async fn tokens_live_until_expiry_or_revocation(store: Store) {
    let (user, _) = owner(&store).await;
    store.insert_token("live", TokenKind::Access, user, "test", now() + 600, "fam").await.unwrap();
    store.insert_token("old", TokenKind::Access, user, "test", now() - 1, "fam").await.unwrap();
    store.insert_token("refresh", TokenKind::Refresh, user, "test", now() + 600, "fam").await.unwrap();
    assert_eq!(store.token_user("live", TokenKind::Access).await.unwrap(), Some(user));
    assert_eq!(store.token_user("live", TokenKind::Refresh).await.unwrap(), None, "kinds do not mix");
    assert_eq!(store.token_user("old", TokenKind::Access).await.unwrap(), None, "expired");
    assert_eq!(store.token_user("nope", TokenKind::Access).await.unwrap(), None);
    assert!(store.revoke_token("refresh").await.unwrap());
    assert!(!store.revoke_token("refresh").await.unwrap(), "a refresh token revokes once: replays show");
    assert_eq!(store.token_user("refresh", TokenKind::Refresh).await.unwrap(), None);
}

async fn a_token_family_is_revoked_as_one(store: Store) {
    let (user, _) = owner(&store).await;
    store.insert_token("a1", TokenKind::Access, user, "test", now() + 600, "fam").await.unwrap();
    store.insert_token("r1", TokenKind::Refresh, user, "test", now() + 600, "fam").await.unwrap();
    store.insert_token("r2", TokenKind::Refresh, user, "test", now() + 600, "fam").await.unwrap();
    store.insert_token("other", TokenKind::Access, user, "test", now() + 600, "fam2").await.unwrap();
    assert!(store.revoke_token("r1").await.unwrap());
    let used = store.refresh_token("r1").await.unwrap().unwrap();
    assert_eq!((used.user, used.family.as_str()), (user, "fam"));
    assert!(used.revoked_at.is_some(), "a used refresh token is still found, marked used");
    assert!(store.refresh_token("a1").await.unwrap().is_none(), "an access token is no refresh token");
    assert!(store.refresh_token("nope").await.unwrap().is_none());
    assert_eq!(store.revoke_family("fam").await.unwrap(), 2, "a1 and r2; r1 was already revoked");
    assert_eq!(store.token_user("a1", TokenKind::Access).await.unwrap(), None);
    assert_eq!(store.token_user("r2", TokenKind::Refresh).await.unwrap(), None);
    assert_eq!(store.token_user("other", TokenKind::Access).await.unwrap(), Some(user), "other families live on");
}

async fn an_enrollment_token_enrolls_exactly_one_machine(store: Store) {
    let (user, fleet) = owner(&store).await;
    store.create_enroll_token("t1", fleet, user, now() + 600).await.unwrap();
    store.create_enroll_token("t-old", fleet, user, now() - 1).await.unwrap();
    let info = MachineInfo { hostname: "web1".into(), display_name: "Web".into(), ..Default::default() };
    let machine = store.enroll_machine("t1", "cred1", &info).await.unwrap();
    assert_eq!((machine.fleet_id, machine.display_name.as_deref(), machine.online), (fleet, Some("Web"), false));
    assert!(matches!(store.enroll_machine("t1", "cred2", &info).await, Err(EnrollError::Used)));
    assert!(matches!(store.enroll_machine("t-old", "cred3", &info).await, Err(EnrollError::Expired)));
    assert!(matches!(store.enroll_machine("t-none", "cred4", &info).await, Err(EnrollError::Unknown)));
    assert_eq!(store.machine_by_credential("cred1").await.unwrap().unwrap().id, machine.id);
    assert!(store.machine_by_credential("cred2").await.unwrap().is_none(), "the refused enrollment left nothing");
    assert_eq!(store.list_machines(fleet).await.unwrap().len(), 1);
}

async fn racing_enrollments_with_one_token_make_one_machine(store: Store) {
    let (user, fleet) = owner(&store).await;
    for round in 0..5 {
        let token = format!("race{round}");
        store.create_enroll_token(&token, fleet, user, now() + 600).await.unwrap();
        let tries = (0..4).map(|n| {
            let (store, token) = (Arc::clone(&store), token.clone());
            tokio::spawn(async move {
                let info = MachineInfo { hostname: format!("h{round}-{n}"), ..Default::default() };
                store.enroll_machine(&token, &format!("cred{round}-{n}"), &info).await
            })
        });
        let mut won = 0;
        for t in tries.collect::<Vec<_>>() {
            match t.await.unwrap() {
                Ok(_) => won += 1,
                Err(EnrollError::Used) => {}
                Err(e) => panic!("unexpected refusal: {e}"),
            }
        }
        assert_eq!(won, 1, "round {round}: one token, one machine");
    }
    assert_eq!(store.list_machines(fleet).await.unwrap().len(), 5);
}

async fn machines_go_online_and_offline(store: Store) {
    let (user, fleet) = owner(&store).await;
    let b = enrolled(&store, user, fleet, "b-host").await;
    let a = enrolled(&store, user, fleet, "a-host").await;
    let listed: Vec<String> = store.list_machines(fleet).await.unwrap().into_iter().map(|m| m.hostname).collect();
    assert_eq!(listed, ["a-host", "b-host"], "by hostname");
    assert!(store.list_machines(FleetId::random()).await.unwrap().is_empty());

    let hello = MachineInfo { hostname: "a-renamed".into(), display_name: "Alpha".into(), ..Default::default() };
    store.machine_connected(a.id, &hello).await.unwrap();
    let seen = store.machine(a.id).await.unwrap().unwrap();
    assert!(!seen.online && seen.last_seen.is_some(), "online takes a route, not a hello");
    assert_eq!((seen.hostname.as_str(), seen.display_name.as_deref()), ("a-renamed", Some("Alpha")));
    let quiet = MachineInfo { hostname: "a-renamed".into(), ..Default::default() };
    store.machine_connected(a.id, &quiet).await.unwrap();
    assert_eq!(store.machine(a.id).await.unwrap().unwrap().display_name.as_deref(), Some("Alpha"), "kept");

    let online = |id| {
        let store = store.clone();
        async move { store.machine(id).await.unwrap().unwrap().online }
    };
    store.renew_lease("node-1", "http://n1", now() + 15).await.unwrap();
    let first = store.claim_route(a.id, "node-1").await.unwrap();
    assert!(online(a.id).await && !online(b.id).await);
    store.renew_lease("node-2", "http://n2", now() + 15).await.unwrap();
    let second = store.claim_route(a.id, "node-2").await.unwrap();
    assert!(second > first, "the epoch only grows");
    assert!(!store.release_route(a.id, first).await.unwrap(), "a stale node cannot erase a newer route");
    let route = Route { node: "node-2".into(), advertise: "http://n2".into(), epoch: second };
    assert_eq!(store.route(a.id, now()).await.unwrap(), Some(route));

    store.renew_lease("node-2", "http://n2", now() - 1).await.unwrap();
    assert!(!online(a.id).await, "a dead lease takes its machines offline with no write to them");
    assert_eq!(store.route(a.id, now()).await.unwrap(), None);
    store.renew_lease("node-2", "http://n2", now() + 15).await.unwrap();
    assert!(online(a.id).await);
    assert!(store.release_route(a.id, second).await.unwrap());
    store.machine_disconnected(a.id).await.unwrap();
    assert!(!online(a.id).await);

    store.claim_route(b.id, "node-1").await.unwrap();
    store.drop_lease("node-1").await.unwrap();
    assert!(!online(b.id).await, "a clean shutdown drops its routes");
    store.claim_route(b.id, "node-2").await.unwrap();
    store.forget_nodes().await.unwrap();
    assert!(store.list_machines(fleet).await.unwrap().iter().all(|m| !m.online));
    assert!(store.machine(MachineId::random()).await.unwrap().is_none());
}

/// A new link for `machine`, made by `user`.
fn new_link<'a>(user: UserId, machine: &Machine, hash: &'a str, max_opens: Option<i64>) -> NewLink<'a> {
    NewLink {
        id: LinkId::random(),
        fleet_id: machine.fleet_id,
        machine_id: machine.id,
        token_hash: hash,
        created_by: user,
        expires_at: now() + 600,
        read_only: true,
        max_opens,
        session_id: Some("s1".into()),
    }
}

async fn links_are_stored_listed_and_revoked(store: Store) {
    let (user, fleet) = owner(&store).await;
    let (a, b) = (enrolled(&store, user, fleet, "a").await, enrolled(&store, user, fleet, "b").await);
    let mut ids = Vec::new();
    for (n, machine) in [&a, &a, &b].into_iter().enumerate() {
        let hash = format!("hash{n}");
        let link = new_link(user, machine, &hash, None);
        store.insert_link(&link).await.unwrap();
        ids.push(link.id);
    }
    let row = store.link(ids[0]).await.unwrap().unwrap();
    assert_eq!((row.machine_id, row.created_by_email.as_str()), (a.id, "owner@example.com"));
    assert!(row.read_only && row.revoked_at.is_none() && row.opens == 0);
    assert_eq!(row.session_id.as_deref(), Some("s1"));
    let listed: Vec<LinkId> = store.list_links(fleet, None).await.unwrap().iter().map(|l| l.id).collect();
    assert_eq!(listed, [ids[2], ids[1], ids[0]], "newest first, even within one second");
    let of_a: Vec<LinkId> = store.list_links(fleet, Some(a.id)).await.unwrap().iter().map(|l| l.id).collect();
    assert_eq!(of_a, [ids[1], ids[0]]);

    let revoked = store.revoke_links(&[ids[0], ids[1]]).await.unwrap();
    assert_eq!(revoked.iter().map(|r| r.0).collect::<std::collections::HashSet<_>>(), [ids[0], ids[1]].into());
    assert!(store.revoke_links(&[ids[0]]).await.unwrap().is_empty(), "revoked once");
    let live: Vec<LinkId> = store.live_revocations().await.unwrap().iter().map(|r| r.0).collect();
    assert_eq!(live.len(), 2);
    assert!(store.link(ids[0]).await.unwrap().unwrap().revoked_at.is_some());
    assert!(!store.record_open(ids[0]).await.unwrap(), "a revoked link opens nothing");

    let event = |action| AuditEvent { actor: "u", action, link_id: Some(ids[2].to_string()), ..Default::default() };
    store.audit(event("link.open")).await.unwrap();
    store.audit(event("link.close")).await.unwrap();
    let trail: Vec<String> = store.link_audit(ids[2]).await.unwrap().into_iter().map(|e| e.2).collect();
    assert_eq!(trail, ["link.open", "link.close"], "oldest first");
}

async fn racing_opens_never_pass_max_opens(store: Store) {
    let (user, fleet) = owner(&store).await;
    let machine = enrolled(&store, user, fleet, "m").await;
    let link = new_link(user, &machine, "h", Some(1));
    store.insert_link(&link).await.unwrap();
    let id = link.id;
    for round in 0..5 {
        let opens = (0..2).map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.record_open(id).await })
        });
        let mut won = 0;
        for o in opens.collect::<Vec<_>>() {
            won += usize::from(o.await.unwrap().unwrap());
        }
        assert_eq!(won, 1, "round {round}: the last slot goes to one open");
        store.release_open(id).await.unwrap();
    }
    store.release_open(id).await.unwrap();
    assert_eq!(store.link(id).await.unwrap().unwrap().opens, 0, "never below zero");
}

async fn device_grants_move_once_and_passwords_are_kept(store: Store) {
    let (user, _) = owner(&store).await;
    let grant = DeviceGrant {
        device_code_hash: "dev".into(),
        user_code: "ABCD-EFGH".into(),
        client_name: "cmdop".into(),
        client_host: "laptop".into(),
        expires_at: now() + 900,
        interval_secs: 5,
        last_poll_at: None,
        status: GrantStatus::Pending,
        user_id: None,
    };
    store.insert_grant(&grant).await.unwrap();
    assert_eq!(store.grant_by_user_code("ABCD-EFGH").await.unwrap().unwrap().device_code_hash, "dev");
    store.grant_polled("dev", now(), 10).await.unwrap();
    let polled = store.grant_by_device_code("dev").await.unwrap().unwrap();
    assert_eq!((polled.interval_secs, polled.status, polled.user_id), (10, GrantStatus::Pending, None));
    assert!(polled.last_poll_at.is_some());
    assert!(store.transition_grant("dev", GrantStatus::Pending, GrantStatus::Approved, Some(user)).await.unwrap());
    assert!(!store.transition_grant("dev", GrantStatus::Pending, GrantStatus::Denied, None).await.unwrap());
    assert!(store.transition_grant("dev", GrantStatus::Approved, GrantStatus::Consumed, None).await.unwrap());
    let done = store.grant_by_device_code("dev").await.unwrap().unwrap();
    assert_eq!((done.status, done.user_id), (GrantStatus::Consumed, Some(user)), "the approver stays");
    assert!(store.grant_by_user_code("NOPE-NOPE").await.unwrap().is_none());

    assert_eq!(store.password_hash(user).await.unwrap(), None);
    store.set_password_hash(user, "$argon2id$x").await.unwrap();
    assert_eq!(store.password_hash(user).await.unwrap().as_deref(), Some("$argon2id$x"));
}

#[test]
fn the_database_url_picks_the_backend_and_never_shows_a_password() {
    let dir = std::path::Path::new("/srv/cmdop");
    assert_eq!(Database::choose(None, dir).unwrap().kind(), "sqlite");
    let pg = Database::choose(Some("postgres://cmdop:s3cret@db:5432/cmdop"), dir).unwrap();
    assert_eq!((pg.kind(), pg.is_shared()), ("postgres", true));
    assert_eq!(pg.to_string(), "postgres://cmdop:***@db:5432/cmdop");
    assert_eq!(Database::choose(Some("postgresql://db/cmdop"), dir).unwrap().kind(), "postgres");
    let refused = Database::choose(Some("mysql://root:pw@db/cmdop"), dir).unwrap_err().to_string();
    assert!(refused.contains("postgres://") && !refused.contains("pw@"), "{refused}");
}

fn grant(hash: &str, user_code: &str, expires_at: i64) -> DeviceGrant {
    DeviceGrant {
        device_code_hash: hash.into(),
        user_code: user_code.into(),
        client_name: "cmdop".into(),
        client_host: "laptop".into(),
        expires_at,
        interval_secs: 5,
        last_poll_at: None,
        status: GrantStatus::Pending,
        user_id: None,
    }
}

async fn the_purge_deletes_what_ended_and_keeps_the_rest(store: Store) {
    let (user, fleet) = owner(&store).await;
    let t = now();
    store.insert_grant(&grant("g-old", "AAAA-AAAA", t - 100)).await.unwrap();
    store.insert_grant(&grant("g-live", "BBBB-BBBB", t + 900)).await.unwrap();
    store.insert_token("a-old", TokenKind::Access, user, "t", t - 100, "f").await.unwrap();
    store.insert_token("a-revoked", TokenKind::Access, user, "t", t + 600, "f").await.unwrap();
    store.revoke_token("a-revoked").await.unwrap();
    store.insert_token("r-used", TokenKind::Refresh, user, "t", t + 600, "f").await.unwrap();
    store.revoke_token("r-used").await.unwrap();
    store.insert_token("a-live", TokenKind::Access, user, "t", t + 600, "f").await.unwrap();
    let owner_of = TicketOwner { user, fleet: Some(fleet) };
    store.insert_console_ticket("tk-old", &owner_of, t - 100).await.unwrap();
    store.insert_console_ticket("tk-used", &owner_of, t + 60).await.unwrap();
    assert!(store.consume_console_ticket("tk-used").await.unwrap().is_some());
    store.insert_console_ticket("tk-live", &owner_of, t + 60).await.unwrap();
    store.create_enroll_token("e-old", fleet, user, t - 100).await.unwrap();
    enrolled(&store, user, fleet, "used").await;
    store.create_enroll_token("e-live", fleet, user, t + 600).await.unwrap();

    // Everything that ended before `t + 5`: used and revoked rows count from their use.
    let purged = store.purge_ended(t + 5).await.unwrap().expect("no other node holds the lock");
    assert_eq!(purged, Purged { grants: 1, tokens: 2, tickets: 2, enroll_tokens: 2 });
    assert!(store.grant_by_device_code("g-old").await.unwrap().is_none());
    assert!(store.grant_by_device_code("g-live").await.unwrap().is_some());
    assert_eq!(store.token_user("a-live", TokenKind::Access).await.unwrap(), Some(user));
    let kept = store.refresh_token("r-used").await.unwrap().expect("a used refresh token stays until it expires");
    assert!(kept.revoked_at.is_some(), "so a replay is still recognised");
    assert!(store.consume_console_ticket("tk-live").await.unwrap().is_some());
    let info = MachineInfo { hostname: "late".into(), ..Default::default() };
    assert!(store.enroll_machine("e-live", "cred-late", &info).await.is_ok());
    assert_eq!(store.purge_ended(t + 5).await.unwrap().map(|p| p.total()), Some(2), "the token and ticket used since");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_postgres_node_purges_at_a_time() {
    use sqlx::Connection;
    let url = pg_cluster::fresh_database().unwrap();
    let store = Database::choose(Some(&url), std::path::Path::new("/nonexistent")).unwrap().connect().await.unwrap();
    let mut other_node = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(postgres::PURGE_LOCK).execute(&mut other_node).await.unwrap();
    assert_eq!(store.purge_ended(now()).await.unwrap(), None, "another node holds the purge lock");
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(postgres::PURGE_LOCK).execute(&mut other_node).await.unwrap();
    assert!(store.purge_ended(now()).await.unwrap().is_some());
}

async fn revocations_and_secrets_are_broadcast_in_order(store: Store) {
    let (user, fleet) = owner(&store).await;
    let machine = enrolled(&store, user, fleet, "host").await;
    let start = store.last_event_id().await.unwrap();
    let (one, two) = (new_link(user, &machine, "h1", None), new_link(user, &machine, "h2", None));
    store.insert_link(&one).await.unwrap();
    store.insert_link(&two).await.unwrap();
    store.revoke_links(&[one.id, two.id]).await.unwrap();
    store.revoke_links(&[one.id]).await.unwrap();

    assert_eq!(store.secret("link-keys").await.unwrap(), None);
    assert!(store.swap_secret("link-keys", None, "sealed-1").await.unwrap());
    assert!(!store.swap_secret("link-keys", None, "sealed-x").await.unwrap(), "exists already");
    let stored = store.secret("link-keys").await.unwrap().unwrap();
    assert!(!store.swap_secret("link-keys", Some(stored.version + 1), "sealed-x").await.unwrap(), "stale version");
    assert!(store.swap_secret("link-keys", Some(stored.version), "sealed-2").await.unwrap());
    assert_eq!(store.secret("link-keys").await.unwrap().unwrap().sealed, "sealed-2");

    let events = store.events_after(start, 100).await.unwrap();
    let seen: Vec<(&str, String)> = events.iter().map(|e| (e.kind.as_str(), e.subject.clone())).collect();
    let mut revoked = vec![(EVENT_REVOKE, one.id.to_string()), (EVENT_REVOKE, two.id.to_string())];
    revoked.sort();
    let mut first_two = seen[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, revoked, "one event per link actually revoked; none for a repeat");
    assert_eq!(seen[2..], [(EVENT_SECRET, "link-keys".to_string()), (EVENT_SECRET, "link-keys".to_string())]);
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(store.last_event_id().await.unwrap(), events.last().unwrap().id);
    assert_eq!(store.events_after(events[1].id, 1).await.unwrap(), events[2..3]);
}

async fn audit_events_keep_their_surface_and_list_by_machine_actor_and_time(store: Store) {
    let (user, fleet) = owner(&store).await;
    let (a, b) = (enrolled(&store, user, fleet, "a").await, enrolled(&store, user, fleet, "b").await);
    let other_fleet = store.fleet_named("other").await.unwrap();
    let event = |actor, surface, action, machine: &Machine, fleet: FleetId| AuditEvent {
        actor,
        action,
        surface,
        fleet_id: Some(fleet.to_string()),
        machine_id: Some(machine.id.to_string()),
        detail: format!("on {}", machine.hostname),
        ..Default::default()
    };
    store.audit(event("ann", "cli", "exec", &a, fleet)).await.unwrap();
    store.audit(event("bob", "mcp", "ask", &b, fleet)).await.unwrap();
    store.audit(event("ann", "web", "console.terminal.open", &b, fleet)).await.unwrap();
    store.audit(event("eve", "cli", "exec", &a, other_fleet.id)).await.unwrap();

    let all = AuditQuery { fleet, since: 0, machine: None, actors: &[], limit: 100 };
    let rows = store.list_audit(&all).await.unwrap();
    let seen: Vec<(&str, &str, &str)> =
        rows.iter().map(|r| (r.actor.as_str(), r.surface.as_str(), r.action.as_str())).collect();
    assert_eq!(
        seen,
        [("ann", "cli", "exec"), ("bob", "mcp", "ask"), ("ann", "web", "console.terminal.open")],
        "oldest first, this fleet only"
    );
    assert_eq!(rows[0].machine_id.as_deref(), Some(a.id.to_string().as_str()));
    assert_eq!(rows[0].detail, "on a");

    let on_b = store.list_audit(&AuditQuery { machine: Some(b.id), ..all }).await.unwrap();
    assert_eq!(on_b.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(), ["ask", "console.terminal.open"]);
    let anns = ["ann".to_string(), "someone".to_string()];
    let of_ann = store.list_audit(&AuditQuery { actors: &anns, ..all }).await.unwrap();
    assert_eq!(of_ann.iter().map(|r| r.surface.as_str()).collect::<Vec<_>>(), ["cli", "web"]);
    let newest = store.list_audit(&AuditQuery { limit: 1, ..all }).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].action, "console.terminal.open", "the limit keeps the newest");
    let future = store.list_audit(&AuditQuery { since: now() + 3600, ..all }).await.unwrap();
    assert!(future.is_empty(), "nothing before `since`");

    let console = store.fleet_audit(fleet, 2).await.unwrap();
    let seen: Vec<(&str, &str)> = console.iter().map(|r| (r.surface.as_str(), r.action.as_str())).collect();
    assert_eq!(seen, [("web", "console.terminal.open"), ("mcp", "ask")], "the console reads newest first");
}
