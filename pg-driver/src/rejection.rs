//! Recognises failures that the configuration causes and that will repeat on every
//! attempt until the configuration changes: postgres refusing a parameter at start,
//! initdb refusing an option. The HA loop gives such a bootstrap up instead of retrying
//! it forever (see `ha_core::PgError::Misconfigured`).
//!
//! Only English messages are recognised (the server's `lc_messages`); others are
//! treated as failures that may pass.

/// What postgres logs about a setting it refuses (the `LOG` line before the `FATAL`).
const PARAMETER_COMPLAINTS: &[&str] = &[
    "unrecognized configuration parameter",
    "invalid value for parameter",
    "is outside the valid range for parameter",
];

/// `FATAL` messages of a postmaster that refuses its configuration.
const FATAL_CONFIG: &[&str] = &[
    "contains errors",
    "unrecognized configuration parameter",
    "invalid value for parameter",
    "requires wal_level",
    "cannot be enabled when wal_level",
    "could not access file",
    "insufficient parameter settings",
];

/// initdb's complaints about its options.
const INITDB_OPTION_COMPLAINTS: &[&str] = &[
    "unrecognized option",
    "invalid option",
    "invalid locale",
    "is not a valid",
    "invalid authentication method",
    "must be a power of 2",
    "initdb: error: invalid",
];

/// The server log lines showing that postgres refused to start because of its
/// configuration (prefixes such as the time stripped), or `None` when the log shows
/// another reason.
pub fn refused_configuration(log: &str) -> Option<String> {
    let fatal = log
        .lines()
        .filter_map(|l| after(l, "FATAL:"))
        .find(|m| FATAL_CONFIG.iter().any(|p| m.contains(p)))?;
    let mut cause: Vec<&str> = log
        .lines()
        .filter_map(|l| after(l, "LOG:"))
        .filter(|m| PARAMETER_COMPLAINTS.iter().any(|p| m.contains(p)))
        .collect();
    cause.push(fatal);
    cause.dedup();
    Some(cause.join("; "))
}

/// initdb's complaint when it failed on its options, or `None`.
pub fn refused_initdb_options(output: &str) -> Option<String> {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| INITDB_OPTION_COMPLAINTS.iter().any(|p| l.contains(p)))
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// The message after `severity` on a log line (`2024-… [123] FATAL:  text` → `text`).
fn after<'a>(line: &'a str, severity: &str) -> Option<&'a str> {
    line.find(severity)
        .map(|i| line[i + severity.len()..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_refused_parameter_and_the_fatal_line() {
        let log = "2026-12-07 02:25:37.697 GMT [27533] LOG:  unrecognized configuration parameter \"wal_keep_segments\" in file \"/d/postgresql.fullauto.conf\" line 16\n\
                   2026-12-07 02:25:37.709 GMT [27533] FATAL:  configuration file \"/d/postgresql.fullauto.conf\" contains errors\n";
        assert_eq!(
            refused_configuration(log).as_deref(),
            Some(
                "unrecognized configuration parameter \"wal_keep_segments\" in file \"/d/postgresql.fullauto.conf\" line 16; \
                 configuration file \"/d/postgresql.fullauto.conf\" contains errors"
            )
        );
        let range =
            "LOG:  0 is outside the valid range for parameter \"max_connections\" (1 .. 262143)\n\
                     FATAL:  configuration file \"/d/postgresql.conf\" contains errors";
        assert_eq!(
            refused_configuration(range).as_deref(),
            Some("0 is outside the valid range for parameter \"max_connections\" (1 .. 262143); configuration file \"/d/postgresql.conf\" contains errors")
        );
        let library =
            "[1] FATAL:  could not access file \"nosuchlib\": No such file or directory\n[1] LOG:  database system is shut down";
        assert_eq!(
            refused_configuration(library).as_deref(),
            Some("could not access file \"nosuchlib\": No such file or directory")
        );
        let wal_level =
            "FATAL:  WAL streaming (max_wal_senders > 0) requires wal_level \"replica\" or \"logical\"";
        assert!(refused_configuration(wal_level).is_some());
    }

    #[test]
    fn other_start_failures_may_pass() {
        for log in [
            "FATAL:  lock file \"postmaster.pid\" already exists",
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\nFATAL:  could not create any TCP/IP sockets",
            "FATAL:  could not create shared memory segment: Cannot allocate memory",
            "LOG:  invalid value for parameter \"x\": \"y\"",
            "",
        ] {
            assert_eq!(refused_configuration(log), None, "{log}");
        }
    }

    #[test]
    fn recognises_initdb_option_errors() {
        assert_eq!(
            refused_initdb_options("/usr/lib/postgresql/15/bin/initdb: unrecognized option '--foo'\ninitdb: hint: Try \"initdb --help\" for more information.").as_deref(),
            Some("/usr/lib/postgresql/15/bin/initdb: unrecognized option '--foo'")
        );
        assert_eq!(
            refused_initdb_options("The database cluster will be initialized with locale \"C.UTF-8\".\ninitdb: error: \"FOO\" is not a valid server encoding name").as_deref(),
            Some("initdb: error: \"FOO\" is not a valid server encoding name")
        );
        assert!(refused_initdb_options("initdb: error: invalid locale name \"xx_YY\"").is_some());
        assert!(refused_initdb_options(
            "initdb: error: could not create directory \"/d\": No space left on device"
        )
        .is_none());
    }
}
