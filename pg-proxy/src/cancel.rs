//! Which server issued which cancel key, so a client's `CancelRequest` (sent on a new
//! connection) reaches the backend it means.

use std::collections::HashMap;
use std::sync::Mutex;

/// Cancel keys (`BackendKeyData` seen in relayed sessions) and their server.
#[derive(Debug, Default)]
pub struct CancelKeys {
    keys: Mutex<HashMap<(i32, i32), String>>,
}

impl CancelKeys {
    /// Records that `server` (`host:port`) issued `(pid, key)`.
    pub fn insert(&self, pid: i32, key: i32, server: &str) {
        self.lock().insert((pid, key), server.to_string());
    }

    /// Forgets a key (its session ended).
    pub fn remove(&self, pid: i32, key: i32) {
        self.lock().remove(&(pid, key));
    }

    /// The server that issued `(pid, key)`.
    pub fn server(&self, pid: i32, key: i32) -> Option<String> {
        self.lock().get(&(pid, key)).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, i32), String>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}
