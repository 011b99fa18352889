//! `config`: the global dynamic configuration shared by all members.

use super::standby_cluster::StandbyClusterConfig;
use super::ParseError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::time::Duration;

/// `synchronous_mode`: Patroni 4.x strings, 3.x booleans on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SynchronousMode {
    /// Asynchronous replication.
    #[default]
    Off,
    /// One or more synchronous standbys with FIRST semantics.
    On,
    /// `ANY k (...)` quorum commit.
    Quorum,
}

impl Serialize for SynchronousMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            SynchronousMode::Off => "off",
            SynchronousMode::On => "on",
            SynchronousMode::Quorum => "quorum",
        })
    }
}

impl<'de> Deserialize<'de> for SynchronousMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Bool(true) => SynchronousMode::On,
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "on" | "true" | "yes" | "1" => SynchronousMode::On,
                "quorum" => SynchronousMode::Quorum,
                _ => SynchronousMode::Off,
            },
            _ => SynchronousMode::Off,
        })
    }
}

/// The typed fields of `config`; all other keys (e.g. `postgresql`, `slots`,
/// `standby_cluster`) are kept in `extra` so a round-trip never loses them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicConfig {
    /// Leader lease lifetime, seconds.
    #[serde(
        default = "defaults::ttl",
        deserialize_with = "seconds",
        serialize_with = "write_seconds"
    )]
    pub ttl: f64,
    /// HA cycle period, seconds.
    #[serde(
        default = "defaults::loop_wait",
        deserialize_with = "seconds",
        serialize_with = "write_seconds"
    )]
    pub loop_wait: f64,
    /// Deadline for one DCS or Postgres operation, seconds.
    #[serde(
        default = "defaults::retry_timeout",
        deserialize_with = "seconds",
        serialize_with = "write_seconds"
    )]
    pub retry_timeout: f64,
    /// Replicas further behind `status.optime` than this (bytes) do not race.
    #[serde(default = "defaults::max_lag", deserialize_with = "integer")]
    pub maximum_lag_on_failover: i64,
    /// >0: swap out a sync standby lagging more than this (bytes).
    #[serde(
        default = "defaults::minus_one",
        deserialize_with = "integer",
        skip_serializing_if = "is_minus_one"
    )]
    pub maximum_lag_on_syncnode: i64,
    /// Time a crashed primary may take to restart before failing over, seconds.
    #[serde(
        default = "defaults::primary_start_timeout",
        alias = "master_start_timeout",
        deserialize_with = "seconds",
        serialize_with = "write_seconds",
        skip_serializing_if = "is_default_start_timeout"
    )]
    pub primary_start_timeout: f64,
    /// Synchronous mode only: SIGKILL a stop that takes longer (0 = never), seconds.
    #[serde(
        default,
        alias = "master_stop_timeout",
        deserialize_with = "seconds",
        serialize_with = "write_seconds",
        skip_serializing_if = "is_zero"
    )]
    pub primary_stop_timeout: f64,
    /// Synchronous replication mode (omitted when off: Patroni 3.x would read the
    /// string "off" as true).
    #[serde(default, skip_serializing_if = "is_off")]
    pub synchronous_mode: SynchronousMode,
    /// Never fall back to asynchronous replication.
    #[serde(
        default,
        deserialize_with = "boolean",
        skip_serializing_if = "is_false"
    )]
    pub synchronous_mode_strict: bool,
    /// Number of synchronous standbys.
    #[serde(
        default = "defaults::one",
        deserialize_with = "integer",
        skip_serializing_if = "is_one"
    )]
    pub synchronous_node_count: i64,
    /// Keep the primary during a DCS outage while all members confirm it.
    #[serde(
        default,
        deserialize_with = "boolean",
        skip_serializing_if = "is_false"
    )]
    pub failsafe_mode: bool,
    /// Require candidate timeline ≥ cluster timeline.
    #[serde(
        default,
        deserialize_with = "boolean",
        skip_serializing_if = "is_false"
    )]
    pub check_timeline: bool,
    /// Maintenance mode: no automatic actions.
    #[serde(
        default,
        deserialize_with = "boolean",
        skip_serializing_if = "is_false"
    )]
    pub pause: bool,
    /// Keep absent members' slots this long, seconds.
    #[serde(
        default = "defaults::member_slots_ttl",
        deserialize_with = "seconds_with_unit",
        serialize_with = "write_seconds",
        skip_serializing_if = "is_default_slots_ttl"
    )]
    pub member_slots_ttl: f64,
    /// Keep `/history` at most this long (0 = all).
    #[serde(
        default,
        deserialize_with = "integer",
        skip_serializing_if = "is_zero_int"
    )]
    pub max_timelines_history: i64,
    /// Everything else (`postgresql`, `slots`, `standby_cluster`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Patroni 3 names (`master_start_timeout`, `master_stop_timeout`) the value was
    /// read with: written back under the same name, so the key keeps what the
    /// operator wrote (as in Patroni, which stores it as given).
    #[serde(skip)]
    pub legacy_names: LegacyNames,
}

/// Which Patroni 3 key names a [`DynamicConfig`] was read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegacyNames {
    /// `master_start_timeout` instead of `primary_start_timeout`.
    pub master_start_timeout: bool,
    /// `master_stop_timeout` instead of `primary_stop_timeout`.
    pub master_stop_timeout: bool,
}

impl LegacyNames {
    /// The `(legacy, current)` key pairs this value uses the legacy name of.
    fn used(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        [
            (
                self.master_start_timeout,
                ("master_start_timeout", "primary_start_timeout"),
            ),
            (
                self.master_stop_timeout,
                ("master_stop_timeout", "primary_stop_timeout"),
            ),
        ]
        .into_iter()
        .filter_map(|(used, names)| used.then_some(names))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

// Defaults are left out when writing, so the key holds what the user set, as
// Patroni's does, and numbers keep Patroni's integer form.
fn is_minus_one(v: &i64) -> bool {
    *v == -1
}
fn is_one(v: &i64) -> bool {
    *v == 1
}
fn is_zero_int(v: &i64) -> bool {
    *v == 0
}
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}
fn is_default_start_timeout(v: &f64) -> bool {
    *v == defaults::primary_start_timeout()
}
fn is_default_slots_ttl(v: &f64) -> bool {
    *v == defaults::member_slots_ttl()
}
fn is_off(m: &SynchronousMode) -> bool {
    *m == SynchronousMode::Off
}

/// Whole seconds as JSON integers (`30`, not `30.0`); fractions stay fractions.
fn write_seconds<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

mod defaults {
    pub fn ttl() -> f64 {
        30.0
    }
    pub fn loop_wait() -> f64 {
        10.0
    }
    pub fn retry_timeout() -> f64 {
        10.0
    }
    pub fn max_lag() -> i64 {
        1_048_576
    }
    pub fn minus_one() -> i64 {
        -1
    }
    pub fn one() -> i64 {
        1
    }
    pub fn primary_start_timeout() -> f64 {
        300.0
    }
    pub fn member_slots_ttl() -> f64 {
        1800.0
    }
}

impl Default for DynamicConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("empty config always parses"))
    }
}

impl DynamicConfig {
    /// Parses the `config` key.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let v: Value = serde_json::from_str(raw)?;
        if !v.is_object() {
            return Err(ParseError::Shape("config must be a JSON object"));
        }
        Ok(Self::from_value(v)?)
    }

    /// Reads a JSON object, remembering the Patroni 3 key names it uses.
    pub fn from_value(v: Value) -> Result<Self, serde_json::Error> {
        let has = |k: &str| v.get(k).is_some();
        let legacy_names = LegacyNames {
            master_start_timeout: has("master_start_timeout") && !has("primary_start_timeout"),
            master_stop_timeout: has("master_stop_timeout") && !has("primary_stop_timeout"),
        };
        let mut c: DynamicConfig = serde_json::from_value(v)?;
        c.legacy_names = legacy_names;
        Ok(c)
    }

    /// The JSON object as stored in the DCS: defaults left out, and the key names the
    /// value was read with.
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()));
        if let Some(obj) = v.as_object_mut() {
            for (legacy, current) in self.legacy_names.used() {
                if let Some(x) = obj.remove(current) {
                    obj.insert(legacy.to_string(), x);
                }
            }
        }
        v
    }

    /// Compact JSON, as [`DynamicConfig::to_value`] (fields in declaration order
    /// unless a legacy name had to be put back).
    pub fn to_json(&self) -> String {
        if self.legacy_names.used().next().is_some() {
            return self.to_value().to_string();
        }
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// `ttl` as a duration.
    pub fn ttl(&self) -> Duration {
        secs(self.ttl)
    }
    /// The `loop_wait` in force, as a duration: the configured value, shortened when
    /// it breaks the timing rule (see [`DynamicConfig::effective_timing`]).
    pub fn loop_wait(&self) -> Duration {
        secs(self.effective_timing().0)
    }
    /// The `retry_timeout` in force, as a duration: the configured value, shortened
    /// when even the shortest `loop_wait` breaks the timing rule.
    pub fn retry_timeout(&self) -> Duration {
        secs(self.effective_timing().1)
    }

    /// The timing a DCS backend and the HA loop run with: `ttl` and the effective
    /// `loop_wait`/`retry_timeout`.
    pub fn timing(&self) -> crate::dcs::DcsTiming {
        crate::dcs::DcsTiming {
            ttl: self.ttl(),
            retry_timeout: self.retry_timeout(),
            loop_wait: self.loop_wait(),
        }
    }

    /// `(loop_wait, retry_timeout)` in force, in seconds. The rule
    /// `loop_wait + 2·retry_timeout ≤ ttl` is what lets a leader that lost the DCS
    /// demote itself before its lease can expire. Patroni accepts a config that breaks
    /// it and shortens the timeouts instead, and so does fullauto, in Patroni's order:
    /// `loop_wait` first, down to 1 s (or its own value if that is shorter); only then
    /// `retry_timeout`, to `(ttl − loop_wait) / 2`. The stored config keeps the values
    /// the operator wrote.
    pub fn effective_timing(&self) -> (f64, f64) {
        let (ttl, loop_wait, retry) = (self.ttl, self.loop_wait, self.retry_timeout);
        if loop_wait + 2.0 * retry <= ttl {
            return (loop_wait, retry);
        }
        let shortest_loop = loop_wait.min(1.0);
        if shortest_loop + 2.0 * retry > ttl {
            (shortest_loop, (ttl - shortest_loop) / 2.0)
        } else {
            (ttl - 2.0 * retry, retry)
        }
    }

    /// What [`DynamicConfig::effective_timing`] changed, in words for the operator's
    /// log and `--validate-config`; `None` when the configured values are used as
    /// they are.
    pub fn timing_adjustment(&self) -> Option<String> {
        let (loop_wait, retry) = self.effective_timing();
        if loop_wait == self.loop_wait && retry == self.retry_timeout {
            return None;
        }
        let mut msg = format!(
            "loop_wait + 2*retry_timeout ({}) exceeds ttl ({}): using loop_wait {}",
            self.loop_wait + 2.0 * self.retry_timeout,
            self.ttl,
            loop_wait
        );
        if retry != self.retry_timeout {
            msg.push_str(&format!(" and retry_timeout {retry}"));
        }
        msg.push_str(" (as Patroni does); set them so the rule holds to silence this");
        Some(msg)
    }
    /// `primary_start_timeout` as a duration.
    pub fn primary_start_timeout(&self) -> Duration {
        secs(self.primary_start_timeout)
    }

    /// Whether `standby_cluster` is configured with a source (host, port or restore_command).
    pub fn is_standby_cluster(&self) -> bool {
        self.extra
            .get("standby_cluster")
            .and_then(Value::as_object)
            .is_some_and(|s| {
                ["host", "port", "restore_command"]
                    .iter()
                    .any(|k| s.get(*k).is_some_and(|v| !v.is_null()))
            })
    }

    /// The typed `standby_cluster` section; `None` when absent, without a source, or
    /// invalid (`validate` names the problems). An invalid section with a source still
    /// counts for [`DynamicConfig::is_standby_cluster`]: the leader never promotes on a typo.
    pub fn standby_cluster(&self) -> Option<StandbyClusterConfig> {
        StandbyClusterConfig::parse(self.extra.get("standby_cluster"))
            .ok()
            .flatten()
    }

    /// `postgresql.use_pg_rewind`
    pub fn use_pg_rewind(&self) -> bool {
        self.extra
            .get("postgresql")
            .and_then(|p| p.get("use_pg_rewind"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Everything wrong with this config, as messages naming the field: the timing
    /// rules and malformed slot entries. Writers of the config refuse it then.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = self.timing_problems();
        errs.extend(super::permanent_slots::problems(self));
        errs
    }

    /// Problems with the timing settings, as messages naming the field. A config that
    /// breaks `loop_wait + 2·retry_timeout ≤ ttl` is not one of them: its timeouts are
    /// shortened ([`DynamicConfig::effective_timing`]); a ttl that leaves no room for
    /// any retry is. A running agent ignores timing with problems.
    pub fn timing_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.ttl.is_nan() || self.ttl <= 0.0 {
            errs.push(format!("ttl: must be > 0, got {}", self.ttl));
        }
        if self.loop_wait.is_nan() || self.loop_wait <= 0.0 {
            errs.push(format!("loop_wait: must be > 0, got {}", self.loop_wait));
        }
        if self.retry_timeout.is_nan() || self.retry_timeout <= 0.0 {
            errs.push(format!(
                "retry_timeout: must be > 0, got {}",
                self.retry_timeout
            ));
        }
        let (loop_wait, retry) = self.effective_timing();
        if errs.is_empty() && (retry <= 0.0 || loop_wait >= self.ttl) {
            errs.push(format!(
                "ttl: {} leaves no time for loop_wait and two retries (loop_wait {}, retry_timeout {})",
                self.ttl, self.loop_wait, self.retry_timeout
            ));
        }
        if self.synchronous_node_count < 1 {
            errs.push("synchronous_node_count: must be >= 1".to_string());
        }
        if let Err(e) = StandbyClusterConfig::parse(self.extra.get("standby_cluster")) {
            errs.extend(e);
        }
        errs
    }
}

fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s)
    } else {
        Duration::ZERO
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    number(&v).ok_or_else(|| serde::de::Error::custom(format!("expected seconds, got {v}")))
}

/// Seconds, or a number with one of Postgres' time units (`30min`, `1h`, `500ms`), as
/// Patroni reads `member_slots_ttl`.
fn seconds_with_unit<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    let with_unit = || {
        let s = v.as_str()?.trim();
        let at = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (n, unit) = s.split_at(at);
        let n: f64 = n.parse().ok()?;
        let scale = match unit.trim() {
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        Some(n * scale)
    };
    number(&v).or_else(with_unit).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "expected seconds or a time with a unit (us, ms, s, min, h, d), got {v}"
        ))
    })
}

fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    number(&v)
        .map(|f| f as i64)
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, got {v}")))
}

fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_patroni() {
        let c = DynamicConfig::default();
        assert_eq!(c.ttl, 30.0);
        assert_eq!(c.loop_wait, 10.0);
        assert_eq!(c.retry_timeout, 10.0);
        assert_eq!(c.maximum_lag_on_failover, 1_048_576);
        assert_eq!(c.synchronous_mode, SynchronousMode::Off);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn reads_3x_forms_and_keeps_unknown_keys() {
        let c = DynamicConfig::parse(
            r#"{"ttl":"20","synchronous_mode":true,"master_start_timeout":0,"postgresql":{"use_pg_rewind":true}}"#,
        )
        .unwrap();
        assert_eq!(c.ttl, 20.0);
        assert_eq!(c.synchronous_mode, SynchronousMode::On);
        assert_eq!(c.primary_start_timeout, 0.0);
        assert!(c.use_pg_rewind());
        assert!(c.to_json().contains("use_pg_rewind"));
        // Written back in Patroni's form: integers, no defaults the user did not set.
        assert_eq!(
            DynamicConfig::parse(r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#)
                .unwrap()
                .to_json(),
            r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576}"#
        );
    }

    #[test]
    fn patroni_3_key_names_are_written_back_as_read() {
        let c = DynamicConfig::parse(r#"{"ttl":30,"master_start_timeout":0}"#).unwrap();
        assert_eq!(c.primary_start_timeout, 0.0);
        assert_eq!(
            c.to_json(),
            r#"{"loop_wait":10,"master_start_timeout":0,"maximum_lag_on_failover":1048576,"retry_timeout":10,"ttl":30}"#
        );
        let c = DynamicConfig::parse(r#"{"primary_start_timeout":0}"#).unwrap();
        assert!(c.to_json().contains(r#""primary_start_timeout":0"#));
    }

    #[test]
    fn standby_cluster_problems_are_named_by_path() {
        let c = DynamicConfig::parse(r#"{"standby_cluster":{"host":"h","port":0}}"#).unwrap();
        assert_eq!(c.validate().len(), 1);
        assert!(c.validate()[0].starts_with("standby_cluster.port: "));
        assert!(c.is_standby_cluster(), "an invalid section never promotes");
        assert_eq!(c.standby_cluster(), None);
        let ok = DynamicConfig::parse(r#"{"standby_cluster":{"host":"h","port":6000}}"#).unwrap();
        assert!(ok.validate().is_empty());
        assert_eq!(ok.standby_cluster().map(|s| s.port), Some(6000));
    }

    #[test]
    fn timing_that_breaks_the_rule_is_shortened_as_patroni_does() {
        // Patroni's acceptance suite: loop_wait 2, retry_timeout 10, then ttl 20.
        let c = DynamicConfig::parse(r#"{"ttl":20,"loop_wait":2,"retry_timeout":10}"#).unwrap();
        assert!(c.validate().is_empty());
        assert_eq!(c.effective_timing(), (1.0, 9.5));
        assert_eq!(c.loop_wait(), Duration::from_secs(1));
        assert_eq!(c.retry_timeout(), Duration::from_millis(9500));
        // The DCS and the HA loop run with the effective values too.
        assert_eq!(
            c.timing(),
            crate::dcs::DcsTiming {
                ttl: Duration::from_secs(20),
                retry_timeout: Duration::from_millis(9500),
                loop_wait: Duration::from_secs(1),
            }
        );
        assert_eq!(
            c.timing_adjustment().as_deref(),
            Some("loop_wait + 2*retry_timeout (22) exceeds ttl (20): using loop_wait 1 and retry_timeout 9.5 (as Patroni does); set them so the rule holds to silence this")
        );
        // loop_wait alone is shortened when that is enough.
        let c = DynamicConfig::parse(r#"{"ttl":30,"loop_wait":15,"retry_timeout":10}"#).unwrap();
        assert_eq!(c.effective_timing(), (10.0, 10.0));
        assert_eq!(
            c.timing_adjustment().as_deref(),
            Some("loop_wait + 2*retry_timeout (35) exceeds ttl (30): using loop_wait 10 (as Patroni does); set them so the rule holds to silence this")
        );
        // A short fast-profile loop_wait stays as written.
        let c = DynamicConfig::parse(r#"{"ttl":2,"loop_wait":0.5,"retry_timeout":1}"#).unwrap();
        assert_eq!(c.effective_timing(), (0.5, 0.75));
        // A rule-abiding config is used as it is.
        assert_eq!(DynamicConfig::default().timing_adjustment(), None);
    }

    #[test]
    fn rejects_unusable_timing() {
        let c = DynamicConfig::parse(r#"{"ttl":1,"loop_wait":5,"retry_timeout":5}"#).unwrap();
        assert_eq!(c.validate().len(), 1);
        let c = DynamicConfig::parse(r#"{"ttl":0,"loop_wait":5,"retry_timeout":5}"#).unwrap();
        assert_eq!(c.validate(), vec!["ttl: must be > 0, got 0".to_string()]);
        assert!(DynamicConfig::parse("[1]").is_err());
        assert!(DynamicConfig::parse(r#"{"ttl":"abc"}"#).is_err());
    }
}

#[cfg(test)]
mod unit_tests {
    use super::DynamicConfig;

    #[test]
    fn member_slots_ttl_takes_postgres_time_units() {
        for (text, secs) in [
            ("\"30min\"", 1800.0),
            ("\"1h\"", 3600.0),
            ("\"500ms\"", 0.5),
            ("90", 90.0),
        ] {
            let c: DynamicConfig =
                serde_json::from_str(&format!("{{\"member_slots_ttl\": {text}}}")).unwrap();
            assert_eq!(c.member_slots_ttl, secs, "{text}");
        }
        assert!(
            serde_json::from_str::<DynamicConfig>(r#"{"member_slots_ttl": "5 parsecs"}"#).is_err()
        );
    }
}
