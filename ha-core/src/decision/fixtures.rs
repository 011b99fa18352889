//! Decision scenarios as data, in the manner of raft-rs's `testdata`: every file in
//! `src/decision/testdata/` is a list of blocks, each a cluster view, a local Postgres
//! and the exact actions `decide` emits for them, one [`Action`] `Display` line each.
//! Adding a case is adding text. `REWRITE=1 cargo test -p ha-core fixtures` writes
//! the emitted actions into the files (review the diff before committing it).
//!
//! A block:
//! ```text
//! # what the scenario shows (comment lines are kept as they are)
//! decide me=b at=1010 keep
//! leader a
//! member a primary 100
//! key config {"synchronous_mode":"on"}
//! pg replica 100
//! outcome renewed 1000
//! ----
//! Follow a
//! PublishMember role=replica state=running
//! ```
//! `decide` takes `me` (the deciding member), `at` (ms, default 1000), `read_at` (ms
//! the view was read, default 1000), `keep` (start from the state the previous block
//! left instead of a fresh one), `save=NAME` (remember the state this block leaves)
//! and `from=NAME` (start from a remembered state). Input lines:
//! - `leader NAME`, `member NAME ROLE WAL`, `key KEY VALUE` (the rest of the line):
//!   the cluster view (an `initialize` key is there unless `view empty`, a cluster
//!   nobody initialized; `key initialize VALUE` replaces its value, empty while a
//!   bootstrap runs); a member line may add `timeline=N` and `tags=JSON` (JSON
//!   without spaces) to its record; `dcs unreachable TEXT`: the read failed;
//! - `pg primary WAL`, `pg replica WAL`: the local Postgres, running on timeline 1,
//!   then any of `process=running|starting|stopped|crashed|hung`,
//!   `in_recovery=true|false|-`, `sysid=ID`, `timeline=N`, `wal=LSN`,
//!   `following=NAME|-`, `version=N` (`server_version_num`), `synchronous_commit=VALUE`;
//!   `pg empty`: no data directory; `slot NAME physical LSN` or `slot NAME logical
//!   DATABASE PLUGIN LSN`, then `active` and `xmin=N` as needed: a replication slot
//!   it has; `remote JSON` (the rest of the line): it streams from a standby
//!   cluster's remote as that `standby_cluster` section describes; `cluster_state
//!   VALUE` (the rest of the line): what pg_control says; `repl NAME SYNC_STATE FLUSH
//!   [replay=LSN]`: a replication connection (streaming) the primary reports; `ssn
//!   VALUE` (the rest of the line): its `synchronous_standby_names`;
//!   `replication_state VALUE|-` (the rest of the line): its walreceiver's state
//!   (`streaming` unless said); `busy promote|demote|restart|…`: a background action
//!   runs;
//! - `outcome renewed MS`, `outcome acquired MS`, `outcome lost`, `outcome taken`,
//!   `outcome initialize-won`, `outcome initialize-lost`, `outcome sync-written
//!   ok|failed` (the CAS write of `sync` this cycle's step asked for),
//!   `outcome probed PEER…` with
//!   each peer `NAME:WAL` followed by `,primary` or `,priority=N` as needed, or `NAME:-`
//!   for no answer; `outcome failsafe-checked SENT_MS NAME,…|-` (the members that
//!   accepted a failsafe call sent at `SENT_MS`, then `NAME:LSN,…` if they reported
//!   the positions of their slots): the query outcomes of this cycle;
//! - `executed ACTION` (an action line the previous block emitted): the runner ran it
//!   in an earlier step of this cycle;
//! - `tag nofailover`, `tag nostream`: the node's tags (set); `tag KEY=VALUE`: a tag
//!   with a JSON value (or a string), as the config file would give it;
//! - `state lease_until=MS`, `state started_at=MS`, `state switchover_waiting_since=MS`,
//!   `state sync_confirm_from=LSN`, `state sync_confirm_names VALUE` (the rest of the
//!   line), `state members_seen MS NAME,…` (each member last seen at MS), `state
//!   failsafe_written NAME,…` (a topology this node wrote, each member
//!   at `http://127.0.0.1:8008/NAME`), `state fence_armed`, `state last_leader_view`
//!   (this block's view, and its `config`, are what the last successful read as
//!   leader showed): the local state to start from;
//! - `request restart`, `request reinitialize [from-leader] [force]`: an operator
//!   request waits for the decision; `watchdog failed`: a required watchdog does not
//!   work; `failsafe_leader NAME`: a failsafe leader called this node within ttl;
//!   `failsafe_slots NAME:LSN,…`: the slot positions that call handed over;
//!   `node api_url=URL`, `node failsafe_record_durable`, `node
//!   can_restore_without_leader`, `node bootstrap_config JSON` (the rest of the line:
//!   the node's `bootstrap.dcs`, e.g. a `standby_cluster` section): the node's
//!   settings;
//! - `assert message ~ TEXT` (the message contains TEXT), `assert message = TEXT`,
//!   `assert lease_until MS|-`, `assert rerun true|false`, `assert wake_at MS|-`,
//!   `assert started_at MS|-`, `assert failsafe_active true|false`,
//!   `assert verdict -|started`, `assert verdict refused TEXT` (the exact reason),
//!   `assert history TIMELINE,…` (the timelines of the history written),
//!   `assert failsafe_written NAME,…|-`, `assert sync_confirm_from LSN|-`,
//!   `assert failsafe_call_slots NAME:LSN,…` (the slot positions a `CheckFailsafe`
//!   hands the members), `assert upstream NAME host=HOST|- port=PORT [remote=JSON]`
//!   (where the first action naming an upstream streams or copies from, `-` for none;
//!   `remote` the standby cluster settings it carries, as JSON), `assert
//!   rewind_pending true|false`: checks beyond the actions.

mod checks;
mod words;

use super::standby;
use super::tests::{cfg, obs, t, View};
use super::{decide, Action, LocalState, OperatorRequest, Outcome};
use crate::dcs::DcsError;
use crate::model::{Cluster, DynamicConfig};
use crate::postgres::{PgObservation, ReplicationConnection};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use words::{member_line, ms, peer, positions, postgres, slot, topology};

/// One block of a fixture file.
struct Block {
    /// Line number of the `decide` line (1-based).
    line: usize,
    /// Comment lines before it.
    comments: Vec<String>,
    /// The `decide` line.
    command: String,
    /// Input lines.
    input: Vec<String>,
    /// The expected output lines.
    expected: Vec<String>,
}

fn parse(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut comments = Vec::new();
    while let Some((i, l)) = lines.next() {
        if l.trim().is_empty() {
            continue;
        }
        if l.starts_with('#') {
            comments.push(l.to_string());
            continue;
        }
        if !l.starts_with("decide") {
            return Err(format!("line {}: expected `decide`, found {l:?}", i + 1));
        }
        let mut input = Vec::new();
        loop {
            match lines.next() {
                Some((_, "----")) => break,
                Some((_, x)) => input.push(x.to_string()),
                None => return Err(format!("line {}: block without `----`", i + 1)),
            }
        }
        let mut expected = Vec::new();
        while let Some((_, x)) = lines.peek() {
            if x.trim().is_empty() {
                break;
            }
            expected.push(x.to_string());
            lines.next();
        }
        blocks.push(Block {
            line: i + 1,
            comments: std::mem::take(&mut comments),
            command: l.to_string(),
            input,
            expected,
        });
    }
    Ok(blocks)
}

/// What the previous block of the same file left: its state and its actions.
#[derive(Default)]
struct Prev {
    state: LocalState,
    actions: Vec<Action>,
}

/// Runs one block; returns the emitted output lines.
fn run(
    block: &Block,
    prev: &mut Prev,
    saved: &mut BTreeMap<String, LocalState>,
) -> Result<Vec<String>, String> {
    let mut me = None;
    let mut at = 1000;
    let mut read_at = 1000;
    let mut start = LocalState::default();
    let mut save = None;
    for arg in block.command.split_whitespace().skip(1) {
        match arg.split_once('=') {
            Some(("me", v)) => me = Some(v.to_string()),
            Some(("at", v)) => at = ms(v)?,
            Some(("read_at", v)) => read_at = ms(v)?,
            Some(("save", v)) => save = Some(v.to_string()),
            Some(("from", v)) => {
                start = saved
                    .get(v)
                    .cloned()
                    .ok_or_else(|| format!("no saved state {v:?}"))?
            }
            None if arg == "keep" => start = prev.state.clone(),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let me = me.ok_or("decide needs me=NAME")?;
    let mut node = cfg(&me);
    let mut state = start;
    let mut view = View::new();
    let mut empty_view = false;
    let mut unreachable = None;
    let mut pg: Option<PgObservation> = None;
    let mut busy = None;
    let mut outcomes = Vec::new();
    let mut asserts = Vec::new();
    let mut request = None;
    let mut watchdog_failed = false;
    let mut failsafe_leader = None;
    let mut failsafe_slots = BTreeMap::new();
    let mut executed = Vec::new();
    let mut remember_view = false;
    for l in &block.input {
        let words: Vec<&str> = l.split_whitespace().collect();
        match words.as_slice() {
            ["leader", name] => view = view.leader(name),
            ["member", name, role, wal, extra @ ..] => {
                view = member_line(view, name, role, wal, extra)?
            }
            ["key", "initialize", ..] => {
                let value = l.trim_start()["key".len()..].trim_start()["initialize".len()..].trim();
                view.0[0].value = value.to_string();
            }
            ["key", k, ..] => {
                let value = l.trim_start()["key".len()..].trim_start()[k.len()..].trim_start();
                view = view.key(k, value)
            }
            ["view", "empty"] => empty_view = true,
            ["dcs", "unreachable", ..] => {
                unreachable = Some(l.trim_start()["dcs unreachable".len()..].trim().to_string())
            }
            ["pg", rest @ ..] => pg = Some(postgres(rest)?),
            ["repl", name, sync_state, flush, rest @ ..] => {
                let pg = pg.as_mut().ok_or("`repl` before `pg`")?;
                let replay_lsn = match rest {
                    [] => None,
                    [r] => Some(ms(r
                        .strip_prefix("replay=")
                        .ok_or("repl: expected replay=LSN")?)?),
                    _ => return Err(format!("unknown repl fields {rest:?}")),
                };
                pg.replication.push(ReplicationConnection {
                    application_name: name.to_string(),
                    state: "streaming".into(),
                    sync_state: sync_state.to_string(),
                    flush_lsn: Some(ms(flush)?),
                    replay_lsn,
                    ..Default::default()
                })
            }
            ["replication_state", ..] => {
                let pg = pg.as_mut().ok_or("`replication_state` before `pg`")?;
                let v = l.trim_start()["replication_state".len()..].trim();
                pg.replication_state = (v != "-").then(|| v.to_string());
            }
            ["ssn", ..] => {
                let pg = pg.as_mut().ok_or("`ssn` before `pg`")?;
                pg.synchronous_standby_names =
                    Some(l.trim_start()["ssn".len()..].trim().to_string())
            }
            ["slot", rest @ ..] => {
                let pg = pg.as_mut().ok_or("`slot` before `pg`")?;
                pg.slots.push(slot(rest)?)
            }
            ["remote", ..] => {
                let pg = pg.as_mut().ok_or("`remote` before `pg`")?;
                let section = l.trim_start()["remote".len()..].trim();
                let mut dc = DynamicConfig::default();
                dc.extra.insert(
                    "standby_cluster".into(),
                    serde_json::from_str(section).map_err(|e| format!("remote {section}: {e}"))?,
                );
                pg.following = Some(standby::REMOTE_NAME.into());
                pg.upstream = standby::remote_upstream(&dc);
            }
            ["cluster_state", ..] => {
                let pg = pg.as_mut().ok_or("`cluster_state` before `pg`")?;
                pg.cluster_state = Some(l.trim_start()["cluster_state".len()..].trim().to_string())
            }
            ["failsafe_slots", slots] => failsafe_slots = positions(slots)?,
            ["busy", what] => busy = Some(words::busy(what)?),
            ["outcome", "renewed", sent] => outcomes.push(Outcome::LeaseRenewed {
                sent_at: t(ms(sent)?),
            }),
            ["outcome", "acquired", sent] => outcomes.push(Outcome::LeaseAcquired {
                sent_at: t(ms(sent)?),
            }),
            ["outcome", "lost"] => outcomes.push(Outcome::LeaseLost),
            ["outcome", "taken"] => outcomes.push(Outcome::LeaseTaken),
            ["outcome", "initialize-won"] => outcomes.push(Outcome::InitializeWon),
            ["outcome", "initialize-lost"] => outcomes.push(Outcome::InitializeLost),
            ["outcome", "sync-written", result @ ("ok" | "failed")] => {
                outcomes.push(Outcome::SyncWritten {
                    ok: *result == "ok",
                })
            }
            ["outcome", "failsafe-checked", sent, accepted, reported @ ..] => {
                outcomes.push(Outcome::FailsafeChecked {
                    sent_at: t(ms(sent)?),
                    accepted: accepted
                        .split(',')
                        .filter(|n| !n.is_empty() && *n != "-")
                        .map(str::to_string)
                        .collect(),
                    positions: match reported {
                        [] => BTreeMap::new(),
                        [p] => positions(p)?,
                        _ => return Err(format!("unknown failsafe-checked fields {reported:?}")),
                    },
                })
            }
            ["executed", ..] => {
                let line = l.trim_start()["executed".len()..].trim();
                let action = prev
                    .actions
                    .iter()
                    .find(|a| a.to_string() == line)
                    .ok_or(format!("the previous block emitted no {line:?}"))?;
                executed.push(action.clone());
            }
            ["outcome", "probed", peers @ ..] => outcomes.push(Outcome::PeersProbed(
                peers.iter().map(|p| peer(p)).collect::<Result<_, _>>()?,
            )),
            ["tag", "nofailover"] => node.tags.nofailover = Some(true),
            ["tag", "nostream"] => node.tags.nostream = Some(true),
            ["tag", kv] => {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or(format!("tag {kv:?} is not KEY=VALUE"))?;
                let mut all = match serde_json::to_value(&node.tags) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => serde_json::Map::new(),
                };
                // The flags as written, also when false (the record hides them then).
                for (flag, set) in [
                    ("nofailover", node.tags.nofailover),
                    ("nosync", node.tags.nosync),
                ] {
                    if let Some(b) = set {
                        all.insert(flag.into(), b.into());
                    }
                }
                let value = serde_json::from_str(v).unwrap_or_else(|_| v.into());
                all.insert(k.into(), value);
                node.tags = serde_json::from_value(all.into()).map_err(|e| e.to_string())?;
            }
            ["state", "fence_armed"] => state.fence_armed = true,
            ["state", "last_leader_view"] => remember_view = true,
            ["state", "failsafe_written", names] => state.failsafe_written = Some(topology(names)),
            ["state", "members_seen", at, names] => {
                let seen = t(ms(at)?);
                state.members_seen = names.split(',').map(|n| (n.to_string(), seen)).collect();
            }
            ["state", "sync_confirm_names", ..] => {
                let v = l.trim_start()["state".len()..].trim_start()["sync_confirm_names".len()..]
                    .trim();
                state.sync_confirm_names = Some(v.to_string());
            }
            ["state", kv] => match kv.split_once('=') {
                Some(("lease_until", v)) => state.lease_until = Some(t(ms(v)?)),
                Some(("started_at", v)) => state.started_at = Some(t(ms(v)?)),
                Some(("switchover_waiting_since", v)) => {
                    state.switchover_waiting_since = Some(t(ms(v)?))
                }
                Some(("sync_confirm_from", v)) => state.sync_confirm_from = Some(ms(v)?),
                _ => return Err(format!("unknown state {kv:?}")),
            },
            ["request", "restart"] => request = Some(OperatorRequest::Restart),
            ["request", "reinitialize", flags @ ..] => {
                request = Some(OperatorRequest::Reinitialize {
                    from_leader: flags.contains(&"from-leader"),
                    force: flags.contains(&"force"),
                })
            }
            ["watchdog", "failed"] => watchdog_failed = true,
            ["failsafe_leader", name] => failsafe_leader = Some(name.to_string()),
            ["node", "failsafe_record_durable"] => node.failsafe_record_durable = true,
            ["node", "can_restore_without_leader"] => node.can_restore_without_leader = true,
            ["node", "bootstrap_config", ..] => {
                let json =
                    l.trim_start()["node".len()..].trim_start()["bootstrap_config".len()..].trim();
                node.bootstrap_config =
                    DynamicConfig::parse(json).map_err(|e| format!("bootstrap_config: {e}"))?;
            }
            ["node", kv] => match kv.split_once('=') {
                Some(("api_url", v)) => node.api_url = Some(v.to_string()),
                _ => return Err(format!("unknown node setting {kv:?}")),
            },
            ["assert", ..] => asserts.push(l.trim_start()["assert".len()..].trim().to_string()),
            _ => return Err(format!("unknown input line {l:?}")),
        }
    }
    let pg = pg.ok_or("no `pg` line")?;
    let cluster = if empty_view {
        Cluster::default()
    } else {
        view.cluster()
    };
    if remember_view {
        state.config = cluster.config.as_ref().map(|c| c.value.clone());
        state.last_leader_view = Some(cluster.clone());
    }
    let mut o = obs(cluster, pg, outcomes);
    o.executed = executed;
    o.read_at = t(read_at);
    o.busy = busy;
    o.request = request;
    o.watchdog_failed = watchdog_failed;
    o.failsafe_leader = failsafe_leader;
    o.failsafe_slots = failsafe_slots;
    if let Some(why) = unreachable {
        o.cluster = Err(DcsError::Unreachable(why));
    }
    let d = decide(&node, &state, &o, t(at));
    for a in &asserts {
        checks::check(a, &d)?;
    }
    prev.state = d.state.clone();
    prev.actions = d.actions.clone();
    if let Some(name) = save {
        saved.insert(name, d.state.clone());
    }
    Ok(d.actions.iter().map(ToString::to_string).collect())
}

fn render(blocks: &[Block], outputs: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (b, o) in blocks.iter().zip(outputs) {
        if !out.is_empty() {
            out.push('\n');
        }
        for c in &b.comments {
            let _ = writeln!(out, "{c}");
        }
        let _ = writeln!(out, "{}", b.command);
        for l in &b.input {
            let _ = writeln!(out, "{l}");
        }
        out.push_str("----\n");
        for l in o {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/decision/testdata")
}

#[test]
fn fixtures() {
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("src/decision/testdata")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixture files");
    let mut failures = Vec::new();
    let mut blocks_run = 0;
    for f in &files {
        let name = f
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(f).expect("fixture file");
        let blocks = match parse(&text) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut prev = Prev::default();
        let mut saved = BTreeMap::new();
        let mut outputs = Vec::new();
        for b in &blocks {
            blocks_run += 1;
            match run(b, &mut prev, &mut saved) {
                Ok(got) => {
                    if got != b.expected && !rewrite {
                        failures.push(format!(
                            "{name}:{}: emitted actions differ\n  expected:\n    {}\n  emitted:\n    {}",
                            b.line,
                            b.expected.join("\n    "),
                            got.join("\n    ")
                        ));
                    }
                    outputs.push(got);
                }
                Err(e) => {
                    failures.push(format!("{name}:{}: {e}", b.line));
                    outputs.push(b.expected.clone());
                }
            }
        }
        if rewrite {
            let new = render(&blocks, &outputs);
            if new != text {
                std::fs::write(f, new).expect("rewrite fixture");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {blocks_run} fixture blocks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
