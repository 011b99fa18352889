//! Command line of `fullautoctl`: patronictl's commands, options and defaults.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `fullautoctl`: inspect and operate a fullauto (or Patroni) cluster.
#[derive(Debug, Parser)]
#[command(
    name = "fullautoctl",
    version,
    about = "Command line control of a fullauto/Patroni cluster",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Configuration file (a Patroni or fullauto config works). Given before the
    /// command, as with patronictl (`query` has its own `-c`).
    #[arg(short = 'c', long = "config-file", env = "PATRONICTL_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// DCS to use instead of the config file's: etcd3://host:port,
    /// zookeeper://host:port, consul://host:port (a path sets the namespace; etcd://,
    /// the v2 API, is refused). Given before the command, as with patronictl (`query`
    /// has its own `-d`).
    #[arg(short = 'd', long = "dcs-url", alias = "dcs", env = "DCS_URL")]
    pub dcs_url: Option<String>,
    /// Do not verify the REST API's TLS certificates.
    #[arg(short = 'k', long = "insecure", global = true)]
    pub insecure: bool,
    /// Seconds one DCS operation may take before the DCS counts as unreachable.
    #[arg(long = "dcs-timeout", global = true, default_value_t = 10.0)]
    pub dcs_timeout: f64,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Boxed table.
    #[default]
    Pretty,
    /// Tab-separated values with a header line.
    Tsv,
    /// A JSON list of objects keyed by column name.
    Json,
    /// A YAML list of mappings keyed by column name.
    #[value(alias = "yml")]
    Yaml,
}

/// Member roles as patronictl's `--role` accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum RoleFilter {
    /// The leader key holder.
    Leader,
    /// Same as leader (3.x also said `master`).
    #[value(alias = "master")]
    Primary,
    /// The leader of a standby cluster.
    StandbyLeader,
    /// Every member that is not the leader.
    Replica,
    /// Same as replica.
    Standby,
    /// Every member.
    #[default]
    Any,
}

/// Watch options shared by `list` and `topology`.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct WatchArgs {
    /// Print the current time before each output.
    #[arg(short = 't', long = "timestamp")]
    pub timestamp: bool,
    /// Repeat every 2 seconds until interrupted.
    #[arg(short = 'W')]
    pub watch_continuous: bool,
    /// Repeat every N seconds until interrupted.
    #[arg(short = 'w', long = "watch", value_name = "N")]
    pub watch: Option<f64>,
}

impl WatchArgs {
    /// The repeat interval, if watching.
    pub fn interval(&self) -> Option<f64> {
        self.watch
            .or(if self.watch_continuous {
                Some(2.0)
            } else {
                None
            })
            .filter(|s| s.is_finite() && *s > 0.0)
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the members of the cluster(s).
    List {
        /// Cluster names (default: `scope` of the config).
        clusters: Vec<String>,
        /// Show every optional column.
        #[arg(short = 'e', long = "extended")]
        extended: bool,
        /// Add an `Electable` column: whether each member could take over now, and why not.
        #[arg(long = "explain")]
        explain: bool,
        /// Output format.
        #[arg(short = 'f', long = "format", value_enum, default_value_t = Format::Pretty)]
        format: Format,
        /// Watch options.
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Show the members as a tree by `replicatefrom`.
    Topology {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// Watch options.
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Switch the leader over to another member.
    Switchover {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// The current leader.
        #[arg(long = "leader", visible_alias = "primary", alias = "master")]
        leader: Option<String>,
        /// The member to promote.
        #[arg(long = "candidate")]
        candidate: Option<String>,
        /// When: an ISO 8601 time (local time zone when none is given) or `now`.
        #[arg(long = "scheduled")]
        scheduled: Option<String>,
        /// Do not ask anything.
        #[arg(long = "force")]
        force: bool,
    },
    /// Promote a member (the leader may be missing or unhealthy).
    Failover {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// The member to promote.
        #[arg(long = "candidate")]
        candidate: Option<String>,
        /// Deprecated: makes it a switchover from this leader.
        #[arg(long = "leader", alias = "primary", alias = "master", hide = true)]
        leader: Option<String>,
        /// Do not ask anything.
        #[arg(long = "force")]
        force: bool,
    },
    /// Restart Postgres on members.
    Restart {
        /// Cluster name.
        cluster: String,
        /// Members (default: all members with the role).
        members: Vec<String>,
        /// Restart only members with this role.
        #[arg(short = 'r', long = "role", value_enum, default_value_t = RoleFilter::Any)]
        role: RoleFilter,
        /// Restart one member only (chosen at random).
        #[arg(long = "any")]
        any: bool,
        /// When: an ISO 8601 time or `now`.
        #[arg(long = "scheduled")]
        scheduled: Option<String>,
        /// Restart only if the running Postgres is older than this version.
        #[arg(long = "pg-version")]
        pg_version: Option<String>,
        /// Restart only if a restart is pending.
        #[arg(long = "pending")]
        pending: bool,
        /// Fail (and fail over if needed) when the restart takes longer (seconds).
        #[arg(long = "timeout")]
        timeout: Option<String>,
        /// Do not ask anything.
        #[arg(long = "force")]
        force: bool,
    },
    /// Rebuild replicas from the leader.
    Reinit {
        /// Cluster name.
        cluster: String,
        /// Members.
        members: Vec<String>,
        /// Do not ask; cancel a running action first.
        #[arg(long = "force")]
        force: bool,
        /// Take the base backup from the leader.
        #[arg(long = "from-leader")]
        from_leader: bool,
        /// Wait until the rebuild has finished.
        #[arg(long = "wait")]
        wait: bool,
    },
    /// Make members re-read their config file.
    Reload {
        /// Cluster name.
        cluster: String,
        /// Members (default: all members with the role).
        members: Vec<String>,
        /// Reload only members with this role.
        #[arg(short = 'r', long = "role", value_enum, default_value_t = RoleFilter::Any)]
        role: RoleFilter,
        /// Do not ask anything.
        #[arg(long = "force")]
        force: bool,
    },
    /// Discard a scheduled restart or switchover: `flush CLUSTER [MEMBERS...] restart|switchover`.
    Flush {
        /// Cluster name.
        cluster: String,
        /// Member names, then `restart` or `switchover`.
        #[arg(required = true, num_args = 1.., value_name = "[MEMBERS...] TARGET")]
        rest: Vec<String>,
        /// Flush only members with this role.
        #[arg(short = 'r', long = "role", value_enum, default_value_t = RoleFilter::Any)]
        role: RoleFilter,
        /// Do not ask anything.
        #[arg(long = "force")]
        force: bool,
    },
    /// Put the cluster into maintenance mode (no automatic actions).
    Pause {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// Wait until every member has seen it.
        #[arg(long = "wait")]
        wait: bool,
    },
    /// Leave maintenance mode.
    Resume {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// Wait until every member has seen it.
        #[arg(long = "wait")]
        wait: bool,
    },
    /// Turn the cluster into a standby cluster of another one (adds `standby_cluster`).
    DemoteCluster {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// Host of the remote primary to follow.
        #[arg(long = "host")]
        host: Option<String>,
        /// Port of the remote primary.
        #[arg(long = "port")]
        port: Option<u16>,
        /// `restore_command` of the standby leader.
        #[arg(long = "restore-command")]
        restore_command: Option<String>,
        /// Slot on the remote primary the standby leader streams through.
        #[arg(long = "primary-slot-name")]
        primary_slot_name: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long = "force")]
        force: bool,
    },
    /// Turn a standby cluster into a normal one (removes `standby_cluster`).
    PromoteCluster {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long = "force")]
        force: bool,
    },
    /// Print the dynamic configuration as YAML.
    ShowConfig {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
    },
    /// Change the dynamic configuration.
    EditConfig {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// Do not show the changes.
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        /// Set `dotted.path=yaml value` (an empty value or `null` removes the key).
        #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Set a PostgreSQL parameter: shorthand for `-s postgresql.parameters.NAME=VALUE`.
        #[arg(short = 'p', long = "pg", value_name = "NAME=VALUE")]
        pg: Vec<String>,
        /// Merge the YAML of this file (`-` for stdin) into the config.
        #[arg(long = "apply", value_name = "FILE")]
        apply: Option<String>,
        /// Replace the config with the YAML of this file (`-` for stdin).
        #[arg(long = "replace", value_name = "FILE")]
        replace: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long = "force")]
        force: bool,
    },
    /// Show the timeline history (failovers and switchovers).
    History {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// Output format.
        #[arg(short = 'f', long = "format", value_enum, default_value_t = Format::Pretty)]
        format: Format,
    },
    /// Delete every key of the cluster from the DCS (asks three questions).
    Remove {
        /// Cluster name.
        cluster: String,
        /// Format of the member list shown first.
        #[arg(short = 'f', long = "format", value_enum, default_value_t = Format::Pretty)]
        format: Format,
    },
    /// Print a libpq connection string of the leader or a member.
    Dsn {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// A member with this role.
        #[arg(short = 'r', long = "role", value_enum)]
        role: Option<RoleFilter>,
        /// This member.
        #[arg(short = 'm', long = "member")]
        member: Option<String>,
    },
    /// Run SQL on a member (the leader unless -r or -m says otherwise).
    Query {
        /// Cluster name (default: `scope` of the config).
        cluster: Option<String>,
        /// The SQL to run.
        #[arg(short = 'c', long = "command")]
        command: Option<String>,
        /// Run the SQL in this file.
        #[arg(short = 'f', long = "file")]
        file: Option<std::path::PathBuf>,
        /// Run it on this member.
        #[arg(short = 'm', long = "member")]
        member: Option<String>,
        /// Run it on a member with this role.
        #[arg(short = 'r', long = "role", value_enum)]
        role: Option<RoleFilter>,
        /// Database to connect to.
        #[arg(short = 'd', long = "dbname")]
        dbname: Option<String>,
        /// Role to connect as.
        #[arg(short = 'U', long = "username")]
        username: Option<String>,
        /// Ask for the password.
        #[arg(long = "password")]
        password: bool,
        /// Output format.
        #[arg(long = "format", value_enum, default_value_t = Format::Tsv)]
        format: Format,
        /// Column separator of the tsv format.
        #[arg(long = "delimiter", default_value = "\t")]
        delimiter: String,
        /// Repeat.
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Print the version of fullautoctl, and of each member with a cluster name.
    Version {
        /// Cluster name.
        cluster: Option<String>,
        /// Members (default: all).
        members: Vec<String>,
    },
}
