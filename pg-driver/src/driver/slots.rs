//! Replication slots: creating, advancing and dropping them, and copying logical
//! slots' state files from the primary.

use super::*;

impl PgDriver {
    pub(super) async fn do_apply_slot_changes(&self, changes: &SlotChanges) -> Result<()> {
        let names = changes
            .create
            .iter()
            .map(|s| &s.name)
            .chain(changes.advance.iter().map(|a| &a.name))
            .chain(changes.drop.iter());
        for name in names {
            if !crate::slots::is_valid_slot_name(name) {
                return Err(DriverError::Invalid(format!(
                    "`{name}` is not a valid slot name (lowercase letters, digits, _; at most 63)"
                )));
            }
        }
        let client = self.connect_local(SQL_TIMEOUT).await?;
        // Every change is tried: one failing slot must not hold up the others.
        let mut failures: Vec<String> = Vec::new();
        for name in &changes.drop {
            // A consumer may have connected since the observation: such a slot stays.
            let r = client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND NOT active",
                    &[name],
                )
                .await;
            if let Err(e) = r {
                failures.push(format!("drop {name}: {}", sql::query_error(e)));
            }
        }
        for slot in &changes.create {
            let r = match &slot.kind {
                SlotKind::Physical => client
                    .execute(
                        "SELECT pg_create_physical_replication_slot($1, true)",
                        &[&slot.name],
                    )
                    .await
                    .map_err(sql::query_error),
                SlotKind::Logical { database, plugin } => {
                    match self.connect_local_db(database).await {
                        Ok(db) => db
                            .execute(
                                "SELECT pg_create_logical_replication_slot($1, $2)",
                                &[&slot.name, plugin],
                            )
                            .await
                            .map_err(sql::query_error),
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = r {
                failures.push(format!("create {}: {e}", slot.name));
            }
        }
        for adv in &changes.advance {
            let target = ha_core::model::format_lsn(adv.to);
            let r = match &adv.database {
                None => Ok(None),
                Some(db) => self.connect_local_db(db).await.map(Some),
            };
            let conn = match r {
                Err(e) => {
                    failures.push(format!("advance {} to {target}: {e}", adv.name));
                    continue;
                }
                Ok(db) => db,
            };
            let conn = conn.as_ref().unwrap_or(&client);
            let r = conn
                .execute(
                    "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                    &[&adv.name, &target],
                )
                .await;
            let Err(e) = r else { continue };
            let wal_gone = e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FILE);
            failures.push(format!(
                "advance {} to {target}: {}",
                adv.name,
                sql::query_error(e)
            ));
            // A copied logical slot that starts before this server's oldest WAL can
            // never decode: drop it so the next copy brings a newer state.
            if wal_gone && adv.database.is_some() {
                let dropped = conn
                    .execute("SELECT pg_drop_replication_slot($1)", &[&adv.name])
                    .await;
                if dropped.is_ok() {
                    failures.push(format!(
                        "dropped {}: it needs WAL this server no longer has",
                        adv.name
                    ));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(DriverError::Query(failures.join("; ")))
        }
    }

    pub(super) async fn do_read_logical_slot_states(
        &self,
        source: &Upstream,
        names: &[String],
    ) -> Result<Vec<SlotStateFile>> {
        let client = self.connect_peer(source).await?;
        let mut files = Vec::new();
        for name in names {
            if !crate::slots::is_valid_slot_name(name) {
                return Err(DriverError::Invalid(format!(
                    "`{name}` is not a valid slot name"
                )));
            }
            // Only a logical slot's state is copied: a physical one is created in place.
            let row = client
                .query_opt(
                    "SELECT pg_read_binary_file('pg_replslot/' || slot_name || '/state') \
                     FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'",
                    &[name],
                )
                .await
                .map_err(sql::query_error)?;
            let Some(row) = row else {
                return Err(DriverError::Invalid(format!(
                    "{} has no logical slot `{name}` to copy",
                    source.name
                )));
            };
            files.push(SlotStateFile {
                name: name.clone(),
                content: row.get(0),
            });
        }
        Ok(files)
    }

    pub(super) fn do_install_logical_slot_states(&self, files: &[SlotStateFile]) -> Result<()> {
        if let Some(pid) = self.postmaster_pid() {
            return Err(DriverError::Invalid(format!(
                "postmaster {pid} runs on the data directory: stop it before installing slots"
            )));
        }
        for f in files {
            if !crate::slots::is_valid_slot_name(&f.name) {
                return Err(DriverError::Invalid(format!(
                    "`{}` is not a valid slot name",
                    f.name
                )));
            }
            let replslot = self.data_dir().join("pg_replslot");
            let dir = replslot.join(&f.name);
            // A leftover of an interrupted copy (or an older slot) is replaced whole.
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| DriverError::io("remove", &dir, e))?;
            }
            self.runner.create_dir(&dir, 0o700)?;
            self.runner
                .write_durable(&dir.join("state"), &f.content, 0o600)?;
            std::fs::File::open(&replslot)
                .and_then(|d| d.sync_all())
                .map_err(|e| DriverError::io("sync", &replslot, e))?;
        }
        Ok(())
    }
}
