//! Console sessions: a random id in an `HttpOnly; Secure; SameSite=Strict`
//! cookie, kept only in this process's memory (a restart signs everyone
//! out), with an idle and an absolute expiry, and a CSRF token of its own
//! that every state-changing form must carry back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::grpc::auth::Caller;

/// A session unused this long is gone.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// No session lives longer than this, used or not.
pub const ABSOLUTE: Duration = Duration::from_secs(8 * 60 * 60);
/// Sessions held at once; beyond it the oldest goes, so that sign-ins
/// cannot grow the table without bound.
pub const MAX_SESSIONS: usize = 4096;

pub const COOKIE: &str = "bayspace_session";
/// The pre-session cookie that ties the sign-in form to the browser it was
/// served to (double submit), so a sign-in cannot be forged either.
pub const SIGNIN_COOKIE: &str = "bayspace_signin";
pub const LANG_COOKIE: &str = "bayspace_lang";

#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
    /// A message for the next page (after a redirect): success or not.
    pub flash: Option<(bool, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Random(#[from] bayspace_connector::random::RandomError),
}

/// 32 random bytes, hex.
pub fn random_token() -> Result<String, SessionError> {
    Ok(bayspace_connector::random::hex(32)?)
}

/// Equality that takes the same time wherever the strings differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

#[derive(Default)]
pub struct Sessions {
    // Keyed by the BLAKE3 of the cookie's value, so the table never holds
    // a usable session id.
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // Every update leaves the map whole, so one a panicking thread held
        // is still sound.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session for `caller`; returns the cookie's value.
    pub fn create(&self, caller: Caller, now: Instant) -> Result<String, SessionError> {
        let id = random_token()?;
        let csrf = random_token()?;
        let mut map = self.map();
        map.retain(|_, s| alive(s, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            key(&id),
            Session {
                caller,
                csrf,
                created: now,
                last_seen: now,
                flash: None,
            },
        );
        Ok(id)
    }

    /// The live session with this cookie value, its flash taken out.
    pub fn touch(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.map();
        let k = key(id);
        let s = map.get_mut(&k)?;
        if !alive(s, now) {
            map.remove(&k);
            return None;
        }
        s.last_seen = now;
        let out = s.clone();
        s.flash = None;
        Some(out)
    }

    pub fn flash(&self, id: &str, ok: bool, message: String) {
        if let Some(s) = self.map().get_mut(&key(id)) {
            s.flash = Some((ok, message));
        }
    }

    pub fn remove(&self, id: &str) {
        self.map().remove(&key(id));
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.last_seen) < IDLE
        && now.saturating_duration_since(s.created) < ABSOLUTE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::auth::Role;

    fn caller() -> Caller {
        Caller {
            role: Role::Researcher,
            id: "r1".into(),
            name: "Ada".into(),
        }
    }

    #[test]
    fn sessions_expire_idle_and_absolute() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.create(caller(), t0).unwrap();
        assert_eq!(id.len(), 64);
        let got = s.touch(&id, t0 + Duration::from_secs(60)).unwrap();
        assert_eq!(got.caller, caller());
        assert!(s.touch("not-a-session", t0).is_none());
        // Idle too long.
        assert!(s.touch(&id, t0 + Duration::from_secs(60) + IDLE).is_none());
        // Kept busy, it still ends at the absolute limit.
        let id = s.create(caller(), t0).unwrap();
        let mut t = t0;
        while t < t0 + ABSOLUTE - IDLE {
            t += IDLE / 2;
            assert!(s.touch(&id, t).is_some());
        }
        assert!(s.touch(&id, t0 + ABSOLUTE).is_none());
        let id = s.create(caller(), t0).unwrap();
        s.remove(&id);
        assert!(s.touch(&id, t0).is_none());
    }

    #[test]
    fn flash_shows_once_and_csrf_compares() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.create(caller(), t0).unwrap();
        s.flash(&id, true, "done".into());
        assert_eq!(s.touch(&id, t0).unwrap().flash, Some((true, "done".into())));
        assert_eq!(s.touch(&id, t0).unwrap().flash, None);
        let csrf = s.touch(&id, t0).unwrap().csrf;
        assert!(same_secret(&csrf, &csrf.clone()));
        assert!(!same_secret(&csrf, ""));
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let first = s.create(caller(), t0).unwrap();
        for i in 0..MAX_SESSIONS {
            s.create(caller(), t0 + Duration::from_millis(i as u64 + 1))
                .unwrap();
        }
        assert!(s.map().len() <= MAX_SESSIONS);
        assert!(s.touch(&first, t0 + Duration::from_secs(10)).is_none());
    }
}
