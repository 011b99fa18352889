//! What the proxy knows about one session from the messages it relays: whether it
//! stands at a transaction boundary (every request answered, last `ReadyForQuery`
//! idle), the server parameters it was told, the named prepared statements it
//! created (replayed on a move), and the session state it cannot move (temporary
//! tables, `LISTEN`, SQL `PREPARE`, session advisory locks, `WITH HOLD` cursors).
//! Pure: no I/O.

use crate::wire::cstring;
use std::collections::{BTreeMap, VecDeque};

/// Reported server parameters the proxy sets again on a new server after a move
/// (the others describe the server, not the session).
pub const REPLAYED_PARAMETERS: [&str; 6] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

/// One session's state, as seen in its messages.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// Requests sent (`Query`, `Sync`, `FunctionCall`) not answered by a
    /// `ReadyForQuery` yet.
    pending: usize,
    /// Extended-protocol messages sent since the last `Sync`.
    unsynced: bool,
    /// Transaction status of the last `ReadyForQuery`: `I`, `T` or `E`.
    status: u8,
    /// Server parameters as the client was last told them.
    pub parameters: BTreeMap<String, String>,
    /// Named prepared statements the server confirmed, with their `Parse` message.
    pub statements: BTreeMap<String, Vec<u8>>,
    /// `Parse` messages sent and not yet confirmed (name and message), in order;
    /// `None` ends each request answered by one `ReadyForQuery` (`Sync`, `Query`,
    /// `FunctionCall`), as requests can be pipelined.
    parsing: VecDeque<Option<(String, Vec<u8>)>>,
    /// Why the session cannot be moved to another server, if it cannot.
    pub pinned: Option<String>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            pending: 0,
            unsynced: false,
            status: b'I',
            parameters: BTreeMap::new(),
            statements: BTreeMap::new(),
            parsing: VecDeque::new(),
            pinned: None,
        }
    }
}

impl Tracker {
    /// Whether the session stands at a transaction boundary: nothing in flight,
    /// nothing half-sent, and the last `ReadyForQuery` said idle.
    pub fn idle(&self) -> bool {
        self.pending == 0 && !self.unsynced && self.status == b'I'
    }

    /// Transaction status of the last `ReadyForQuery`.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Whether a request is in flight (sent, not answered).
    pub fn in_flight(&self) -> bool {
        self.pending > 0
    }

    /// Notes a message the client sends (`kind`, whole message `raw` with header).
    pub fn client_message(&mut self, kind: u8, raw: &[u8]) {
        let body = raw.get(5..).unwrap_or_default();
        match kind {
            b'Q' => {
                self.pending += 1;
                self.parsing.push_back(None);
                let (sql, _) = cstring(body);
                self.scan_sql(&sql);
            }
            b'F' => {
                self.pending += 1;
                self.parsing.push_back(None);
            }
            b'S' => {
                self.pending += 1;
                self.unsynced = false;
                self.parsing.push_back(None);
            }
            b'P' => {
                self.unsynced = true;
                let (name, rest) = cstring(body);
                let (sql, _) = cstring(rest);
                self.scan_sql(&sql);
                self.parsing.push_back(Some((name, raw.to_vec())));
            }
            b'C' => {
                self.unsynced = true;
                if body.first() == Some(&b'S') {
                    let (name, _) = cstring(&body[1..]);
                    self.statements.remove(&name);
                }
            }
            b'B' | b'E' | b'D' | b'H' => self.unsynced = true,
            _ => {}
        }
    }

    /// Notes a message the server sends (`kind` and body).
    pub fn server_message(&mut self, kind: u8, body: &[u8]) {
        match kind {
            b'Z' => {
                self.pending = self.pending.saturating_sub(1);
                self.status = body.first().copied().unwrap_or(b'I');
                // Parses not confirmed by now failed or were skipped after an error.
                // This request's unconfirmed parses (failed or skipped) are done
                // with; those of requests pipelined after it still wait.
                while let Some(Some(_)) = self.parsing.pop_front() {}
            }
            b'1' => {
                if matches!(self.parsing.front(), Some(Some(_))) {
                    if let Some(Some((name, raw))) = self.parsing.pop_front() {
                        if !name.is_empty() {
                            self.statements.insert(name, raw);
                        }
                    }
                }
            }
            b'S' => {
                let (name, rest) = cstring(body);
                let (value, _) = cstring(rest);
                self.parameters.insert(name, value);
            }
            _ => {}
        }
    }

    fn pin(&mut self, why: &str) {
        if self.pinned.is_none() {
            self.pinned = Some(why.to_string());
        }
    }

    /// Looks for session state a new server would not have.
    fn scan_sql(&mut self, sql: &str) {
        let lower = sql.to_ascii_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for (i, w) in words.iter().enumerate() {
            let next = |k: usize| words.get(i + k).copied().unwrap_or("");
            match *w {
                "listen" => self.pin("it listens for notifications (LISTEN)"),
                "create" => {
                    let n = if matches!(next(1), "global" | "local") {
                        next(2)
                    } else {
                        next(1)
                    };
                    if n == "temp" || n == "temporary" {
                        self.pin("it created a temporary table");
                    }
                }
                "prepare" if i == 0 || words.get(i.wrapping_sub(1)) == Some(&"explain") => {
                    self.pin("it prepared a statement with SQL PREPARE")
                }
                "pg_advisory_lock"
                | "pg_advisory_lock_shared"
                | "pg_try_advisory_lock"
                | "pg_try_advisory_lock_shared" => self.pin("it took a session advisory lock"),
                "hold" if i > 0 && words[i - 1] == "with" && words.contains(&"declare") => {
                    self.pin("it declared a cursor WITH HOLD")
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        crate::wire::message_bytes(kind, body)
    }

    fn query(t: &mut Tracker, sql: &str) {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        t.client_message(b'Q', &msg(b'Q', &body));
    }

    #[test]
    fn idle_only_between_answered_requests_outside_a_transaction() {
        let mut t = Tracker::default();
        assert!(t.idle());
        query(&mut t, "BEGIN");
        assert!(!t.idle() && t.in_flight());
        t.server_message(b'Z', b"T");
        assert!(!t.idle() && !t.in_flight());
        query(&mut t, "COMMIT");
        t.server_message(b'Z', b"I");
        assert!(t.idle());
        // Extended protocol: not idle until the Sync is answered.
        t.client_message(b'P', &msg(b'P', b"\0SELECT 1\0\0\0"));
        t.client_message(b'B', &msg(b'B', b"\0\0\0\0\0\0\0\0"));
        assert!(!t.idle());
        t.client_message(b'S', &msg(b'S', b""));
        assert!(!t.idle());
        t.server_message(b'1', b"");
        t.server_message(b'Z', b"I");
        assert!(t.idle());
        assert!(t.statements.is_empty(), "the unnamed statement is not kept");
        assert_eq!(t.pinned, None);
    }

    #[test]
    fn named_statements_are_kept_once_confirmed_and_dropped_on_close() {
        let mut t = Tracker::default();
        let parse = msg(b'P', b"s1\0SELECT $1\0\0\0");
        t.client_message(b'P', &parse);
        t.client_message(b'P', &msg(b'P', b"s2\0SELEC broken\0\0\0"));
        t.client_message(b'S', &msg(b'S', b""));
        t.server_message(b'1', b"");
        t.server_message(b'E', b"SERROR\0\0");
        t.server_message(b'Z', b"I");
        assert_eq!(t.statements.keys().collect::<Vec<_>>(), ["s1"]);
        assert_eq!(t.statements["s1"], parse);
        t.client_message(b'C', &msg(b'C', b"Ss1\0"));
        assert!(t.statements.is_empty());
    }

    #[test]
    fn a_parse_pipelined_behind_another_request_is_kept() {
        // tokio-postgres closes the last statement (Close + Sync) and prepares the
        // next (Parse + Describe + Sync) without waiting in between: the first
        // ReadyForQuery must not forget the second request's Parse.
        let mut t = Tracker::default();
        t.client_message(b'C', &msg(b'C', b"Ss1\0"));
        t.client_message(b'S', &msg(b'S', b""));
        let parse = msg(b'P', b"s2\0INSERT INTO t DEFAULT VALUES\0\0\0");
        t.client_message(b'P', &parse);
        t.client_message(b'D', &msg(b'D', b"Ss2\0"));
        t.client_message(b'S', &msg(b'S', b""));
        t.server_message(b'3', b"");
        t.server_message(b'Z', b"I");
        assert!(!t.idle());
        t.server_message(b'1', b"");
        t.server_message(b'n', b"");
        t.server_message(b'Z', b"I");
        assert!(t.idle());
        assert_eq!(t.statements.keys().collect::<Vec<_>>(), ["s2"]);
        assert_eq!(t.statements["s2"], parse);
    }

    #[test]
    fn session_state_pins_the_session_with_a_reason() {
        for (sql, why) in [
            ("create temp table x (a int)", "temporary table"),
            ("CREATE GLOBAL TEMPORARY TABLE x (a int)", "temporary table"),
            ("LISTEN jobs", "LISTEN"),
            ("PREPARE p AS SELECT 1", "PREPARE"),
            ("SELECT pg_advisory_lock(1)", "advisory lock"),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "WITH HOLD"),
        ] {
            let mut t = Tracker::default();
            query(&mut t, sql);
            let pinned = t.pinned.unwrap_or_default();
            assert!(pinned.contains(why), "{sql}: {pinned:?}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UNLISTEN jobs",
            "SELECT pg_advisory_xact_lock(1)",
            "CREATE TABLE temps (a int)",
        ] {
            let mut t = Tracker::default();
            query(&mut t, sql);
            assert_eq!(t.pinned, None, "{sql}");
        }
    }

    #[test]
    fn reported_parameters_are_remembered() {
        let mut t = Tracker::default();
        t.server_message(b'S', b"TimeZone\0UTC\0");
        t.server_message(b'S', b"TimeZone\0Europe/Berlin\0");
        assert_eq!(t.parameters["TimeZone"], "Europe/Berlin");
    }
}
