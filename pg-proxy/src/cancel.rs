//! Which backend a cancel key stands for, so a client's `CancelRequest` (sent on a
//! new connection) reaches the backend it means. Sessions the proxy logged in to
//! itself hand their client a key of the proxy's own, which follows the session
//! when it moves to another server.

use std::collections::HashMap;
use std::sync::Mutex;

/// A server backend: where it runs and its own cancel key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `host:port` of the server.
    pub address: String,
    /// The backend's process id.
    pub pid: i32,
    /// The backend's secret key.
    pub key: i32,
}

/// Cancel keys clients hold, and the backend each stands for.
#[derive(Debug, Default)]
pub struct CancelKeys {
    keys: Mutex<HashMap<(i32, i32), Backend>>,
}

impl CancelKeys {
    /// Records (or re-points) the client key `(pid, key)` to `backend`.
    pub fn insert(&self, pid: i32, key: i32, backend: Backend) {
        self.lock().insert((pid, key), backend);
    }

    /// Forgets a key (its session ended).
    pub fn remove(&self, pid: i32, key: i32) {
        self.lock().remove(&(pid, key));
    }

    /// The backend the client key `(pid, key)` stands for.
    pub fn backend(&self, pid: i32, key: i32) -> Option<Backend> {
        self.lock().get(&(pid, key)).cloned()
    }

    /// Whether the client key `(pid, key)` is in use.
    pub fn contains(&self, pid: i32, key: i32) -> bool {
        self.lock().contains_key(&(pid, key))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, i32), Backend>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}
