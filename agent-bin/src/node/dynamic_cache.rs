//! `patroni.dynamic.json`: the last dynamic configuration seen in the DCS, kept in the
//! data directory as Patroni keeps it. At start it stands in for `bootstrap.dcs`
//! (Patroni's rule: a node that re-creates a lost `config` key writes the cluster's
//! last configuration, not the bootstrap section); deleting it makes `bootstrap.dcs`
//! count again. Tools written for Patroni read and delete it too.

use ha_core::model::DynamicConfig;
use ha_core::runner::RunnerHandle;
use std::path::Path;
use std::sync::Arc;

/// The file's name in the data directory.
pub const FILE: &str = "patroni.dynamic.json";

/// The cached configuration in `data_dir`, if there is a readable one.
pub fn load(data_dir: &Path) -> Option<DynamicConfig> {
    let text = std::fs::read_to_string(data_dir.join(FILE)).ok()?;
    match DynamicConfig::parse(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("{FILE} in the data directory is not usable, ignoring it: {e}");
            None
        }
    }
}

/// Writes the DCS `config` to the cache whenever it changes, until the runner stops.
pub async fn keep(handle: RunnerHandle, pg: Arc<pg_driver::PgDriver>) {
    let mut snapshots = handle.subscribe();
    let mut saved: Option<String> = None;
    loop {
        let current = snapshots
            .borrow()
            .cluster
            .as_ref()
            .and_then(|c| c.config.as_ref())
            .map(|c| c.value.to_json());
        if let Some(json) = current.filter(|j| saved.as_ref() != Some(j)) {
            match pg.write_agent_file(FILE, &json) {
                Ok(true) => saved = Some(json),
                // No cluster in the data directory yet: try again on a later change.
                Ok(false) => {}
                Err(e) => tracing::warn!("could not save the dynamic configuration to {FILE}: {e}"),
            }
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_what_patroni_or_fullauto_wrote_and_skips_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        std::fs::write(
            dir.path().join(FILE),
            r#"{"ttl": 20, "loop_wait": 2, "postgresql": {"use_pg_rewind": true}}"#,
        )
        .unwrap();
        let c = load(dir.path()).expect("cached config");
        assert_eq!((c.ttl, c.loop_wait), (20.0, 2.0));
        assert!(c.use_pg_rewind());
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert_eq!(load(dir.path()), None);
    }
}
