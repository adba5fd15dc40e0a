//! Browser cookie sessions (device page, console) in memory, bounded: anyone may open
//! `GET /device` without signing in, and each visit creates a session for its CSRF token, so an
//! unbounded map would grow with every anonymous request. Expired sessions are dropped by the
//! server's periodic purge (`purge_expired`) and whenever the map is full; beyond the cap, the
//! anonymous session closest to expiry makes room (signed-in ones go last).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::core::sync::lock;
use crate::server::metrics::METRICS;

/// A session store in memory holding at most `cap` sessions. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct BoundedSessions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cap: usize,
    /// The data key present once a session is signed in.
    signed_in_key: &'static str,
    records: Mutex<HashMap<Id, Record>>,
}

impl BoundedSessions {
    /// At most `cap` sessions (at least 1); `signed_in_key` marks a signed-in session.
    pub(crate) fn new(cap: usize, signed_in_key: &'static str) -> Self {
        Self { inner: Arc::new(Inner { cap: cap.max(1), signed_in_key, records: Mutex::default() }) }
    }

    /// Drops every expired session; how many.
    pub(crate) fn purge_expired(&self) -> usize {
        let mut records = lock(&self.inner.records);
        let before = records.len();
        let now = OffsetDateTime::now_utc();
        records.retain(|_, r| r.expiry_date > now);
        let gone = before - records.len();
        METRICS.web_sessions.fetch_sub(gone as u64, Ordering::Relaxed);
        gone
    }

    /// Sessions held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner.records).len()
    }

    /// Stores `record`, making room first when it is new and the map is full.
    fn put(&self, record: Record) {
        let mut records = lock(&self.inner.records);
        if !records.contains_key(&record.id) {
            if records.len() >= self.inner.cap {
                self.make_room(&mut records);
            }
            METRICS.web_sessions.fetch_add(1, Ordering::Relaxed);
        }
        records.insert(record.id, record);
    }

    fn make_room(&self, records: &mut HashMap<Id, Record>) {
        let now = OffsetDateTime::now_utc();
        let before = records.len();
        records.retain(|_, r| r.expiry_date > now);
        if records.len() >= self.inner.cap {
            let key = self.inner.signed_in_key;
            let victim =
                records.iter().min_by_key(|(_, r)| (r.data.contains_key(key), r.expiry_date)).map(|(id, _)| *id);
            if let Some(id) = victim {
                records.remove(&id);
            }
        }
        METRICS.web_sessions.fetch_sub((before - records.len()) as u64, Ordering::Relaxed);
    }
}

#[async_trait]
impl SessionStore for BoundedSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        {
            let records = lock(&self.inner.records);
            while records.contains_key(&record.id) {
                record.id = Id::default();
            }
        }
        self.put(record.clone());
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.put(record.clone());
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(lock(&self.inner.records).get(id).filter(|r| r.expiry_date > now).cloned())
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        if lock(&self.inner.records).remove(id).is_some() {
            METRICS.web_sessions.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(secs: i64, signed_in: bool) -> Record {
        let mut data = HashMap::new();
        if signed_in {
            data.insert("user_id".to_string(), serde_json::json!("u"));
        }
        Record { id: Id::default(), data, expiry_date: OffsetDateTime::now_utc() + time::Duration::seconds(secs) }
    }

    #[tokio::test]
    async fn the_store_stays_under_its_cap_and_keeps_signed_in_sessions() {
        let store = BoundedSessions::new(3, "user_id");
        let mut user = record(60, true);
        store.create(&mut user).await.unwrap();
        for _ in 0..10 {
            store.create(&mut record(3600, false)).await.unwrap();
        }
        assert_eq!(store.len(), 3);
        assert!(store.load(&user.id).await.unwrap().is_some(), "anonymous sessions make room first");
        let mut expired = record(-1, true);
        store.save(&expired).await.unwrap();
        assert!(store.load(&expired.id).await.unwrap().is_none(), "an expired session does not load");
        assert_eq!(store.purge_expired(), 1);
        store.create(&mut expired).await.unwrap();
        assert_eq!(store.len(), 3);
    }
}
