//! `ZooKeeperDcs`: ha-core's `Dcs` trait on ZooKeeper, with Patroni's znode layout.
//!
//! Mapping (spec §1.5): every key is a znode under `/<namespace>/<scope>/`; `leader`
//! and `members/<name>` are ephemeral znodes owned by this agent's session (session
//! timeout = ttl), everything else is persistent. CAS uses the znode version.

use crate::config::ZooKeeperConfig;
use crate::error::{is_transient, to_dcs, ZkError};
use crate::session::{SessionPaths, Sessions};
use crate::watch;
use async_trait::async_trait;
use ha_core::model::keys;
use ha_core::{
    Cluster, ClusterKeys, Dcs, DcsError, DcsTiming, MemberData, RawEntry, SyncState, Version,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use zookeeper_client::{
    Acl, Acls, Client, CreateMode, CreateOptions, Error as ZkClientError, Stat,
};

type ZkResult<T> = Result<T, ZkClientError>;

/// Pause between attempts after a transient error (connection loss while the client
/// moves to another server).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// State shared by the `Dcs` methods and the background watch task.
pub(crate) struct Inner {
    pub(crate) keys: ClusterKeys,
    pub(crate) name: String,
    pub(crate) sessions: Sessions,
    acls: Vec<Acl>,
    pub(crate) changes: tokio::sync::watch::Sender<u64>,
}

impl Inner {
    /// Wakes whoever waits on `subscribe()`.
    pub(crate) fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn options(&self, mode: CreateMode) -> CreateOptions<'_> {
        if self.acls.is_empty() {
            mode.with_acls(Acls::anyone_all())
        } else {
            mode.with_acls(Acls::new(&self.acls))
        }
    }

    /// The cluster directory without its trailing slash (`/service/batman`).
    fn cluster_dir(&self) -> &str {
        self.keys.prefix().trim_end_matches('/')
    }
}

/// A ZooKeeper-backed `Dcs` for one member of one cluster.
///
/// Must be created inside a tokio runtime: it spawns the task that turns ZooKeeper
/// watches and session state changes into `subscribe()` wake-ups. Dropping it closes
/// the session, which removes this agent's ephemeral znodes at once.
pub struct ZooKeeperDcs {
    inner: Arc<Inner>,
    watch_task: tokio::task::JoinHandle<()>,
}

impl Drop for ZooKeeperDcs {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

impl ZooKeeperDcs {
    /// A backend for member `name` of the cluster under `keys`. Connects lazily: an
    /// unreachable ensemble (or, with `use_ssl`, a failed TLS handshake) shows up as
    /// `DcsError::Unreachable` from the calls. The TLS files are read here: an
    /// unreadable or unusable one is a `ZkError::Config` naming its key.
    pub fn new(
        config: &ZooKeeperConfig,
        keys: ClusterKeys,
        name: impl Into<String>,
        timing: DcsTiming,
    ) -> Result<Self, ZkError> {
        let name = name.into();
        if name.is_empty() || name.contains('/') {
            return Err(ZkError::Config(format!(
                "member name `{name}` must be non-empty and contain no `/`"
            )));
        }
        let connect_string = config.connect_string()?;
        let acls = config.acls()?;
        let tls = config.tls_options()?;
        let auth = config
            .auth_data
            .iter()
            .map(|(s, c)| (s.clone(), c.as_bytes().to_vec()))
            .collect();
        // Only the leader and config znodes wake the loop (as Patroni): member and
        // status writes happen every cycle and would make every agent spin.
        let paths = SessionPaths {
            watched: vec![keys.leader(), keys.config()],
            ephemeral: vec![keys.leader(), keys.member(&name)],
            acls: acls.clone(),
        };
        let (opened_tx, opened_rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            keys,
            name,
            sessions: Sessions::new(connect_string, auth, tls, timing, paths, opened_tx),
            acls,
            changes: tokio::sync::watch::Sender::new(0),
        });
        let watch_task = tokio::spawn(watch::run(Arc::downgrade(&inner), opened_rx));
        Ok(ZooKeeperDcs { inner, watch_task })
    }

    /// The id of the session currently in use (the `ephemeralOwner` of my znodes), if
    /// one is open.
    pub fn session_id(&self) -> Option<i64> {
        self.inner.sessions.live().map(|c| c.session_id().0)
    }

    /// Runs `op` against the current session, retrying transient failures until
    /// `retry_timeout`; then `DcsError::Unreachable`.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, DcsError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = ZkResult<T>>,
    {
        let bound = self.inner.sessions.timing().retry_timeout;
        let deadline = Instant::now() + bound;
        let mut last: Option<ZkClientError> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                let why = last.map_or_else(|| "no answer".to_string(), |e| e.to_string());
                let tls = if self.inner.sessions.uses_tls() {
                    " (TLS: the hosts must be TLS client ports whose certificates chain to \
                     `cacert`, and a server that requires a client certificate needs `cert` \
                     and `key` signed by a CA it trusts)"
                } else {
                    ""
                };
                return Err(DcsError::Unreachable(format!(
                    "{what}: zookeeper not reachable within {bound:?} ({why}); check the ensemble and `hosts`{tls}"
                )));
            }
            let attempt = async {
                let client = self.inner.sessions.client().await?;
                op(client).await
            };
            match tokio::time::timeout(deadline - now, attempt).await {
                Err(_) => {}
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_transient(&e) => {
                    tracing::debug!(what, error = %e, "transient zookeeper error, retrying");
                    last = Some(e);
                    let pause = RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
                Ok(Err(e)) => return Err(to_dcs(what, e)),
            }
        }
    }

    /// Creates a znode, creating missing parents (persistent, with my ACLs) first.
    async fn create(
        &self,
        client: &Client,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> ZkResult<Stat> {
        let options = self.inner.options(mode);
        match client.create(path, data, &options).await {
            Err(ZkClientError::NoNode) => {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    if !parent.is_empty() {
                        client
                            .mkdir(parent, &self.inner.options(CreateMode::Persistent))
                            .await?;
                    }
                }
                Ok(client.create(path, data, &options).await?.0)
            }
            other => Ok(other?.0),
        }
    }

    /// Unconditional write of a persistent znode (created when missing).
    async fn put(&self, client: &Client, path: &str, data: &[u8]) -> ZkResult<Stat> {
        match client.set_data(path, data, None).await {
            Err(ZkClientError::NoNode) => {
                match self
                    .create(client, path, data, CreateMode::Persistent)
                    .await
                {
                    Err(ZkClientError::NodeExists) => client.set_data(path, data, None).await,
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Write with optional CAS on the znode version. `None`: the version did not
    /// match (or the znode is gone).
    async fn put_versioned(
        &self,
        client: &Client,
        path: &str,
        data: &[u8],
        expected: Option<Version>,
    ) -> ZkResult<Option<Stat>> {
        let Some(Version(v)) = expected else {
            return self.put(client, path, data).await.map(Some);
        };
        let Ok(v) = i32::try_from(v) else {
            // Znode versions are 32-bit; this one cannot match.
            return Ok(None);
        };
        match client.set_data(path, data, Some(v)).await {
            Ok(stat) => Ok(Some(stat)),
            Err(ZkClientError::BadVersion | ZkClientError::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write_versioned(
        &self,
        what: &str,
        path: String,
        value: String,
        expected: Option<Version>,
    ) -> Result<Option<Stat>, DcsError> {
        self.run(what, |c| {
            let (path, value) = (&path, &value);
            async move {
                self.put_versioned(&c, path, value.as_bytes(), expected)
                    .await
            }
        })
        .await
    }

    /// Writes `value` at `path` as an ephemeral node of my session (a member or
    /// proxy record), taking it over from an older session.
    async fn touch_ephemeral(
        &self,
        what: &str,
        path: String,
        value: String,
    ) -> Result<(), DcsError> {
        self.run(what, |c| {
            let (path, value) = (&path, value.as_bytes());
            async move {
                let me = c.session_id().0;
                // A concurrent change (the old owner's session expiring, say) makes a
                // step fail with NoNode/BadVersion/NodeExists: look again.
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let step = match c.get_data(path).await {
                        Ok((old, stat)) if stat.ephemeral_owner == me => {
                            if old == value {
                                return Ok(());
                            }
                            c.set_data(path, value, Some(stat.version))
                                .await
                                .map(|_| ())
                        }
                        Ok((_, stat)) => {
                            // Left by an older session (or another process): make it
                            // mine so it vanishes with my session.
                            let mut txn = c.new_multi_writer();
                            txn.add_delete(path, Some(stat.version))?;
                            txn.add_create(
                                path,
                                value,
                                &self.inner.options(CreateMode::Ephemeral),
                            )?;
                            txn.commit().await.map(|_| ()).map_err(ZkClientError::from)
                        }
                        Err(ZkClientError::NoNode) => self
                            .create(&c, path, value, CreateMode::Ephemeral)
                            .await
                            .map(|_| ()),
                        Err(e) => Err(e),
                    };
                    match step {
                        Err(
                            ZkClientError::NoNode
                            | ZkClientError::BadVersion
                            | ZkClientError::NodeExists,
                        ) if attempt < 5 => continue,
                        other => return other,
                    }
                }
            }
        })
        .await
    }

    /// Reads the whole cluster: the children of the cluster directory and of
    /// `members/` (in parallel), then every value (pipelined).
    async fn read_cluster(&self, c: &Client) -> ZkResult<Cluster> {
        let keys = &self.inner.keys;
        let dir = self.inner.cluster_dir();
        let members_dir = keys.members_dir();
        let members_dir = members_dir.trim_end_matches('/');
        let (top, members) = futures::join!(c.list_children(dir), c.list_children(members_dir));
        let top = match top {
            Ok(t) => t,
            Err(ZkClientError::NoNode) => return Ok(Cluster::default()),
            Err(e) => return Err(e),
        };
        let members = match members {
            Ok(m) => m,
            Err(ZkClientError::NoNode) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut paths: Vec<String> = Vec::new();
        for child in &top {
            match child.as_str() {
                "members" | "proxies" => {}
                "optime" => paths.push(keys.key("optime/leader")),
                other => paths.push(keys.key(other)),
            }
        }
        paths.extend(members.iter().map(|m| keys.member(m)));
        if top.iter().any(|t| t == "proxies") {
            let dir = keys.proxies_dir();
            match c.list_children(dir.trim_end_matches('/')).await {
                Ok(names) => paths.extend(names.iter().map(|n| keys.proxy(n))),
                Err(ZkClientError::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        let reads = paths.iter().map(|p| c.get_data(p));
        let results = futures::future::join_all(reads).await;
        let mut entries = Vec::with_capacity(paths.len());
        for (path, result) in paths.into_iter().zip(results) {
            let (data, stat) = match result {
                Ok(r) => r,
                // Deleted between listing and reading (an expiring member).
                Err(ZkClientError::NoNode) => continue,
                Err(e) => return Err(e),
            };
            let entry = raw_entry(keys, path, data, &stat);
            if keys.relative(&entry.key) == Some("sync")
                && SyncState::parse(&entry.value).is_ok_and(|s| s == SyncState::default())
            {
                // `{}` is how `sync` is deleted on ZooKeeper (Patroni's convention):
                // present it as absent, as other backends do after a delete.
                continue;
            }
            entries.push(entry);
        }
        Ok(Cluster::from_full_paths(keys, entries))
    }
}

/// One znode as a `RawEntry`: the session is the ephemeral owner (decimal) for
/// ephemeral znodes. The leader's version is its creation zxid rather than its znode
/// version (which is 0 for every new leader znode), so it identifies one leadership.
fn raw_entry(keys: &ClusterKeys, path: String, data: Vec<u8>, stat: &Stat) -> RawEntry {
    let version = if keys.relative(&path) == Some("leader") {
        stat.czxid
    } else {
        i64::from(stat.version)
    };
    RawEntry {
        key: path,
        value: String::from_utf8_lossy(&data).into_owned(),
        version: Version(version),
        session: (stat.ephemeral_owner != 0).then(|| stat.ephemeral_owner.to_string()),
    }
}

#[async_trait]
impl Dcs for ZooKeeperDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        self.run(
            "read cluster",
            |c| async move { self.read_cluster(&c).await },
        )
        .await
    }

    async fn acquire_leader(&self) -> Result<bool, DcsError> {
        let path = self.inner.keys.leader();
        let name = self.inner.name.as_bytes();
        self.run("acquire leader", |c| {
            let path = &path;
            async move {
                match self.create(&c, path, name, CreateMode::Ephemeral).await {
                    Ok(_) => Ok(true),
                    Err(ZkClientError::NodeExists) => {
                        // A retried create whose first attempt went through is mine.
                        match c.get_data(path).await {
                            Ok((data, stat)) => {
                                Ok(data == name && stat.ephemeral_owner == c.session_id().0)
                            }
                            Err(ZkClientError::NoNode) => Ok(false),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    async fn renew_leader(&self) -> Result<bool, DcsError> {
        let path = self.inner.keys.leader();
        let name = self.inner.name.as_bytes();
        self.run("renew leader", |c| {
            let path = &path;
            async move {
                // The read goes through my session, so success also proves the session
                // is alive; after an expiry the server has already deleted the znode.
                let (data, stat) = match c.get_data(path).await {
                    Ok(r) => r,
                    Err(ZkClientError::NoNode) => return Ok(false),
                    Err(e) => return Err(e),
                };
                if data != name {
                    return Ok(false);
                }
                if stat.ephemeral_owner == c.session_id().0 {
                    return Ok(true);
                }
                tracing::warn!(
                    owner = stat.ephemeral_owner,
                    "leader znode holds my name but another session; re-creating it in mine"
                );
                let mut txn = c.new_multi_writer();
                txn.add_delete(path, Some(stat.version))?;
                txn.add_create(path, name, &self.inner.options(CreateMode::Ephemeral))?;
                match txn.commit().await {
                    Ok(_) => Ok(true),
                    Err(e) => match ZkClientError::from(e) {
                        ZkClientError::NoNode | ZkClientError::BadVersion => Ok(false),
                        e => Err(e),
                    },
                }
            }
        })
        .await
    }

    /// Deletes the leader znode if it holds my name. Patroni restarts the whole
    /// session instead, which also drops the member znode; deleting only the leader
    /// znode releases the lock just as atomically, keeps the member record and avoids
    /// a reconnect.
    async fn release_leader(&self) -> Result<bool, DcsError> {
        let path = self.inner.keys.leader();
        let name = self.inner.name.as_bytes();
        self.run("release leader", |c| {
            let path = &path;
            async move {
                let (data, stat) = match c.get_data(path).await {
                    Ok(r) => r,
                    Err(ZkClientError::NoNode) => return Ok(false),
                    Err(e) => return Err(e),
                };
                if data != name {
                    return Ok(false);
                }
                match c.delete(path, Some(stat.version)).await {
                    Ok(()) => Ok(true),
                    Err(ZkClientError::NoNode | ZkClientError::BadVersion) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        let path = self.inner.keys.member(&self.inner.name);
        self.touch_ephemeral("touch member", path, data.to_json())
            .await
    }

    async fn touch_proxy(&self, record: &str) -> Result<(), DcsError> {
        let path = self.inner.keys.proxy(&self.inner.name);
        self.touch_ephemeral("touch proxy", path, record.to_string())
            .await
    }

    async fn initialize(&self, value: &str) -> Result<bool, DcsError> {
        let path = self.inner.keys.initialize();
        self.run("initialize", |c| {
            let path = &path;
            async move {
                match self
                    .create(&c, path, value.as_bytes(), CreateMode::Persistent)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(ZkClientError::NodeExists) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    async fn cas_key(
        &self,
        key: &str,
        value: String,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        let stat = self
            .write_versioned(
                &format!("set {key}"),
                self.inner.keys.key(key),
                value,
                expected,
            )
            .await?;
        Ok(stat.map(|s| Version(i64::from(s.version))))
    }

    async fn delete_key(&self, key: &str, expected: Option<Version>) -> Result<bool, DcsError> {
        let path = self.inner.keys.key(key);
        let version = match expected.map(|Version(v)| i32::try_from(v)) {
            None => None,
            Some(Ok(v)) => Some(v),
            // Znode versions are 32-bit; this one cannot match.
            Some(Err(_)) => return Ok(false),
        };
        self.run(&format!("delete {key}"), |c| {
            let path = &path;
            async move {
                match c.delete(path, version).await {
                    Ok(()) => Ok(true),
                    Err(ZkClientError::NoNode) => Ok(version.is_none()),
                    Err(ZkClientError::BadVersion) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Patroni never deletes `sync` on ZooKeeper: it writes `{}` (an empty state).
    async fn delete_sync(&self, expected: Option<Version>) -> Result<bool, DcsError> {
        let written = self.cas_key(keys::SYNC, "{}".to_string(), expected).await?;
        Ok(written.is_some())
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let dir = self.inner.cluster_dir().to_string();
        self.run("delete cluster", |c| {
            let dir = &dir;
            async move { delete_tree(&c, dir).await }
        })
        .await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn set_timing(&self, timing: DcsTiming) {
        self.inner.sessions.set_timing(timing);
    }
}

/// Deletes `root` and everything under it, children first. Znodes that vanish
/// meanwhile are fine; a child created meanwhile (a member touching its record)
/// makes it walk the tree again.
async fn delete_tree(c: &Client, root: &str) -> ZkResult<()> {
    let mut attempts = 0;
    loop {
        let mut order = vec![root.to_string()];
        let mut i = 0;
        while i < order.len() {
            let children = match c.list_children(&order[i]).await {
                Ok(ch) => ch,
                Err(ZkClientError::NoNode) => Vec::new(),
                Err(e) => return Err(e),
            };
            let parent = order[i].clone();
            order.extend(children.into_iter().map(|ch| format!("{parent}/{ch}")));
            i += 1;
        }
        let mut raced = false;
        for path in order.iter().rev() {
            match c.delete(path, None).await {
                Ok(()) | Err(ZkClientError::NoNode) => {}
                Err(ZkClientError::NotEmpty) if attempts < 10 => raced = true,
                Err(e) => return Err(e),
            }
        }
        if !raced {
            return Ok(());
        }
        attempts += 1;
    }
}
