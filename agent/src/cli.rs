//! The command line as typed: clap derive, validation only. Environment and
//! files are consulted later, in [`crate::config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// mob: a gossip-based, self-organizing cluster agent.
#[derive(Debug, Parser)]
#[command(name = "mob-agent", version, about)]
pub(crate) struct Cli {
    /// Control socket of the agent to talk to (default: DATA_DIR/mob.sock).
    #[arg(long, global = true, env = "MOB_AGENT", value_name = "SOCKET")]
    pub(crate) agent: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the agent on this host.
    Run(Box<RunArgs>),
    /// Print a new random cluster key (base64).
    Keygen,
    /// Print a shell completion script (e.g. `mob-agent completions bash >
    /// /etc/bash_completion.d/mob-agent`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `mob-agent man > mob-agent.1`).
    Man,
    /// List the cluster's members as this agent sees them.
    Members {
        /// Also how long each has been in its state, its clock offset,
        /// providers, tags and version.
        #[arg(long)]
        detail: bool,
        /// Print JSON (always in detail): [{"name","addr","epoch","state",
        /// "state_since_ms","slots","clock_offset_ms","tags","providers",
        /// "draining","leaving","version","started_at_ms"}].
        #[arg(long)]
        json: bool,
    },
    /// Show this agent's counters (packets rejected, gossip traffic).
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add or update services from a TOML or JSON spec file (`-`: stdin),
    /// or a JSON spec given inline.
    Deploy {
        /// Spec file, `-` for stdin, or the spec itself: an argument that
        /// starts with `{` or `[` is JSON.
        file: String,
        /// Return only once every slot of the deployed services runs the
        /// new version, each seen running by one process for its
        /// `min_healthy_time` (exit 1
        /// as soon as one fails, or at the timeout).
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits (e.g. `30s`, `5m`).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "120s", requires = "wait")]
        timeout: std::time::Duration,
        /// Print JSON: [{"name","version","outcome"}].
        #[arg(long)]
        json: bool,
    },
    /// Remove a service.
    Remove {
        /// Service name.
        name: String,
        /// Print JSON: {"name","version"}.
        #[arg(long)]
        json: bool,
    },
    /// Set the number of replicas of a service.
    Scale {
        /// Service name.
        name: String,
        /// Replicas, 0..=1000.
        replicas: u32,
        /// Print JSON: {"name","version"}.
        #[arg(long)]
        json: bool,
    },
    /// Stop every instance of a service, keeping its spec (`start` runs
    /// it again).
    Stop {
        /// Service name.
        name: String,
        /// Print JSON: {"name","version"}.
        #[arg(long)]
        json: bool,
    },
    /// Run a stopped service again.
    Start {
        /// Service name.
        name: String,
        /// Print JSON: {"name","version"}.
        #[arg(long)]
        json: bool,
    },
    /// Restart every instance of a service, one slot after another by its
    /// update policy.
    Restart {
        /// Service name.
        name: String,
        /// Only this slot, at once.
        #[arg(long)]
        slot: Option<u32>,
        /// Print JSON: {"name","version"}.
        #[arg(long)]
        json: bool,
    },
    /// Deploy a kept version of a service again, as a new version.
    Rollback {
        /// Service name.
        name: String,
        /// The version (as `history` lists them); default: the one before
        /// the current.
        #[arg(long)]
        version: Option<u64>,
        /// Print JSON: {"name","version"}.
        #[arg(long)]
        json: bool,
    },
    /// List the kept versions of a service (the last 10): when, by which
    /// node, by which verb, and how each went.
    History {
        /// Service name.
        name: String,
        /// Print JSON: [{"version","written_ms","origin","cause","outcome","spec"}].
        #[arg(long)]
        json: bool,
    },
    /// List services, where each slot runs and in what state.
    Services {
        /// Print JSON: [{"name","provider","replicas","slots":[...]}].
        #[arg(long)]
        json: bool,
    },
    /// Print an instance's log lines, from whichever node runs it.
    Logs {
        /// Service name.
        name: String,
        /// Slot.
        #[arg(long, default_value_t = 0)]
        slot: u32,
        /// Keep printing new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the last lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Join the agent to other agents (host:port, port 7946 if omitted),
    /// as `serf join` does; it keeps them as seeds.
    Join {
        /// Agents to announce to.
        #[arg(required = true)]
        addrs: Vec<String>,
        /// Print JSON: {"joined": names}.
        #[arg(long)]
        json: bool,
    },
    /// Print this binary's version, and the versions the members run when
    /// an agent answers.
    Version {
        /// Print JSON: {"version","members":[{"name","version","state"}]|null}.
        #[arg(long)]
        json: bool,
    },
    /// Print the agent's events (the last 100, then each as it happens)
    /// until interrupted.
    Events {
        /// One JSON object per line: {"seq","time_ms","node","kind",
        /// "peer","service","slot","version","detail"}.
        #[arg(long)]
        json: bool,
    },
    /// Move this node's slots elsewhere and stop taking new ones.
    Drain {
        /// Drain another node: it takes the request up when it reaches it
        /// (at once if it is alive; when it is back, if not).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// Take slots again.
        #[arg(long)]
        undo: bool,
        /// Print JSON: {"node", "draining": true|false}.
        #[arg(long)]
        json: bool,
    },
    /// Forget a down or left node now, on every agent, instead of listing
    /// it as down for `remove_down_after`. Refused for a live node. It is
    /// a member again when it starts again.
    ForceLeave {
        /// Node name.
        node: String,
        /// Print JSON: {"forgotten": NAME}.
        #[arg(long)]
        json: bool,
    },
    /// The cluster's keyring: rotate the key on every agent at once.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print `ip:port` of every instance of a service that serves (up, and
    /// passing its check if it has one), one per line.
    Resolve {
        /// Service name.
        name: String,
        /// Which of its ports (needed when it has several).
        #[arg(long, value_name = "NAME")]
        port: Option<String>,
        /// Print JSON: [{"slot","node","ip","port","addr"}].
        #[arg(long)]
        json: bool,
    },
    /// Show one service in detail.
    Status {
        /// Service name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the spec of a service as stored (TOML; `--json`: JSON), ready
    /// to edit and deploy again.
    Inspect {
        /// Service name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `mob-agent keys ...`: Serf's `keys`, over the table.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Which keys there are, and which live members hold and seal with
    /// each.
    List {
        /// Print JSON: [{"fingerprint","primary","held","nodes","sealing"}].
        #[arg(long)]
        json: bool,
    },
    /// Make every agent accept a new key (as `keygen` prints; `-`: stdin).
    Install {
        /// The key (base64), or `-` to read it from stdin.
        key: String,
        /// Print JSON: {"fingerprint","done"}.
        #[arg(long)]
        json: bool,
    },
    /// Make every agent seal with an installed key.
    Use {
        /// The key (base64), or its fingerprint as `keys list` shows it.
        key: String,
        /// Print JSON: {"fingerprint","done"}.
        #[arg(long)]
        json: bool,
    },
    /// Make every agent drop a key (not the primary).
    Remove {
        /// The key (base64), or its fingerprint as `keys list` shows it.
        key: String,
        /// Print JSON: {"fingerprint","done"}.
        #[arg(long)]
        json: bool,
    },
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `mob-agent run`; every one can also come from `--config`.
#[derive(Debug, Default, Args)]
pub(crate) struct RunArgs {
    /// TOML file with the same keys as these flags; flags win.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Node name, unique in the cluster (default: hostname).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Address for gossip, UDP and TCP (default 0.0.0.0:7946).
    #[arg(long, value_name = "ADDR")]
    pub(crate) bind: Option<SocketAddr>,
    /// Port to bind, keeping the bind IP (the seed's `-p`).
    #[arg(short = 'p', long, value_name = "PORT")]
    pub(crate) port: Option<u16>,
    /// Address other agents reach this one at (default: derived from --bind).
    #[arg(long, value_name = "ADDR")]
    pub(crate) advertise: Option<SocketAddr>,
    /// Seed agent to join, host:port; repeat for several.
    #[arg(short = 'j', long = "join", value_name = "ADDR")]
    pub(crate) join: Vec<String>,
    /// File holding the base64 cluster key (else MOB_KEY, else
    /// DATA_DIR/cluster.key, generated on first start).
    #[arg(long, value_name = "FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// State directory: epoch, key, control socket.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Providers this node offers, comma-separated (exec, shell, bash, docker).
    #[arg(short = 'P', long, value_delimiter = ',', value_name = "LIST")]
    pub(crate) providers: Vec<String>,
    /// Node tag k=v, for placement constraints; repeat for several.
    #[arg(long = "tag", value_name = "K=V", value_parser = parse_tag)]
    pub(crate) tags: Vec<(String, String)>,
    /// Log format.
    #[arg(long, value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// Log filter: `info`, `debug`, `mob_agent=debug,info`… (default:
    /// `log_level` of the config file, else RUST_LOG, else info). SIGHUP
    /// reads the config file's `log_level` again.
    #[arg(long, value_name = "FILTER")]
    pub(crate) log_level: Option<String>,
    /// DNS for the zone `mob.`, UDP and TCP, answered from the local
    /// table (default 127.0.0.1:8600; `off`: none).
    #[arg(long, value_name = "ADDR|off")]
    pub(crate) dns: Option<String>,
    /// HTTP API, metrics and status page (default 127.0.0.1:7947; `off`:
    /// none). An address other than loopback needs --http-token.
    #[arg(long, value_name = "ADDR|off")]
    pub(crate) http: Option<String>,
    /// File holding the bearer token every HTTP request must carry.
    #[arg(long, value_name = "FILE")]
    pub(crate) http_token: Option<PathBuf>,
    /// TTL of DNS answers, in seconds (default 0: clients ask again).
    #[arg(long, value_name = "SECS")]
    pub(crate) dns_ttl: Option<u32>,
    /// Host ports a service's `port = 0` is picked from, LO-HI (default
    /// 20000-32767).
    #[arg(long, value_name = "LO-HI")]
    pub(crate) port_range: Option<String>,
    /// Start even if the table file is damaged: set it aside and refill the
    /// table from peers.
    #[arg(long)]
    pub(crate) reset_table: bool,
    /// Write {"addr","socket"} as JSON to this file once listening (for
    /// scripts and tests).
    #[arg(long, value_name = "FILE", hide = true)]
    pub(crate) ready_file: Option<PathBuf>,
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not k=v"))?;
    if k.is_empty() {
        return Err(format!("{text:?} has an empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["mob-agent", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(run) => Ok(*run),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn seed_short_flags() {
        let r = run(&[
            "-p",
            "9000",
            "-j",
            "10.0.0.1:7946",
            "-j",
            "b:7946",
            "-P",
            "docker,bash",
        ])
        .unwrap();
        assert_eq!(r.port, Some(9000));
        assert_eq!(r.join, vec!["10.0.0.1:7946", "b:7946"]);
        assert_eq!(r.providers, vec!["docker", "bash"]);
    }

    #[test]
    fn long_flags_and_equals_form() {
        let r = run(&[
            "--name=a",
            "--bind",
            "127.0.0.1:0",
            "--advertise=10.1.2.3:7946",
            "--tag",
            "zone=b",
            "--tag=rack=r1=x",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(r.name.as_deref(), Some("a"));
        assert_eq!(r.bind, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(
            r.tags,
            vec![("zone".into(), "b".into()), ("rack".into(), "r1=x".into())]
        );
        assert_eq!(r.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (&["--bind", "nope"][..], "--bind"),
            (&["-p", "70000"][..], "--port"),
            (&["--tag", "novalue"][..], "--tag"),
            (&["--log-format", "xml"][..], "--log-format"),
        ] {
            let err = run(args).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn table_commands() {
        let cli = Cli::try_parse_from(["mob-agent", "deploy", "-"]).unwrap();
        assert!(matches!(cli.command, Command::Deploy { file, wait: false, .. } if file == "-"));
        let cli = Cli::try_parse_from(["mob-agent", "deploy", "web.toml", "--wait"]).unwrap();
        assert!(matches!(cli.command, Command::Deploy { wait: true, .. }));
        let cli = Cli::try_parse_from(["mob-agent", "scale", "web", "3"]).unwrap();
        assert!(matches!(cli.command, Command::Scale { name, replicas: 3, .. } if name == "web"));
        assert_eq!(
            Cli::try_parse_from(["mob-agent", "scale", "web", "-1"])
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            Cli::try_parse_from(["mob-agent", "remove"])
                .unwrap_err()
                .exit_code(),
            2
        );
        let cli = Cli::try_parse_from(["mob-agent", "status", "web", "--json"]).unwrap();
        assert!(matches!(cli.command, Command::Status { json: true, .. }));
        assert!(run(&["--reset-table"]).unwrap().reset_table);
    }

    #[test]
    fn agent_socket_is_global() {
        let cli = Cli::try_parse_from(["mob-agent", "members", "--json", "--agent", "/tmp/x.sock"])
            .unwrap();
        assert_eq!(cli.agent, Some(PathBuf::from("/tmp/x.sock")));
        assert!(matches!(cli.command, Command::Members { json: true, .. }));
    }
}
