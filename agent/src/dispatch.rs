//! The command line, carried out: `run` starts the agent, every other
//! command is one request to a running agent over its control socket
//! (the only place errors become exit codes).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{Cli, Command, KeysCommand};
use crate::config::{AgentConfig, Env, SOCKET_FILE};
use crate::control::client::Client;
use crate::control::protocol::Verb;
use crate::{agent, cli, config, control, events, log_service, logging, output};

/// Parses the command line and runs the command: the agent, or a request
/// to a running one. Exit codes: 0 ok, 1 operation failed, 2 usage error.
pub fn main() -> ExitCode {
    // A panic in one task would leave a half-working agent (gossip up,
    // table or supervisor gone). Print it and abort instead: the instances
    // die with us (parent-death signal) and the service manager restarts
    // a whole agent.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mob-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("mob-agent: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Operation(e)) => {
            eprintln!("mob-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How a command failed, which decides the exit code.
enum Failure {
    Usage(anyhow::Error),
    Operation(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Operation(e.into())
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let env = Env::from_process();
    let client = || socket_path(cli.agent.clone(), &env).map(Client::new);
    match cli.command {
        Command::Keygen => println!("{}", mob_membership::ClusterKey::generate().to_base64()),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = cli::Cli::command();
            clap_complete::generate(shell, &mut command, "mob-agent", &mut std::io::stdout());
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(cli::Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Failure::Operation(e.into()))?;
        }
        Command::Run(args) => {
            let config = AgentConfig::resolve(*args, &env).map_err(|e| Failure::Usage(e.into()))?;
            let set_level = logging::init(config.log_format, &config.log_level);
            let reload = Reload {
                config_file: config.config_file.clone(),
                default_level: config.log_level.clone(),
                set_level,
            };
            agent::run(config, shutdown_signal(reload)?)
                .await
                .map_err(|e| match e {
                    // An address given explicitly that cannot be bound is
                    // the operator's to fix, like a bad flag.
                    agent::RunError::Dns { .. } | agent::RunError::Http { .. } => {
                        Failure::Usage(e.into())
                    }
                    e => Failure::Operation(e.into()),
                })?;
        }
        Command::Members { detail, json } => {
            let members = client()?.members().await?;
            if json {
                println!("{}", output::members_json(&members));
            } else {
                print!("{}", output::members_table(&members, detail));
            }
        }
        Command::Deploy {
            file,
            wait,
            timeout,
            json,
        } => {
            let inline = file.trim_start().starts_with(['{', '[']);
            let text = if inline {
                file.clone()
            } else if file == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| anyhow::anyhow!("reading stdin: {e}"))?
            } else {
                std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{file}: {e}"))?
            };
            let specs = mob_scheduler::spec_file::parse_specs(&text)?;
            let client = client()?;
            let outcomes = client.deploy(specs).await?;
            if json {
                println!("{}", output::deployed_json(&outcomes));
            } else {
                print!("{}", output::deployed(&outcomes));
            }
            if wait {
                let versions: Vec<(String, u64)> = outcomes
                    .iter()
                    .map(|d| (d.name.clone(), d.version))
                    .collect();
                wait_running(&client, versions, timeout).await?;
            }
        }
        Command::Remove { name, json } => {
            let version = client()?.remove(name.clone()).await?;
            if json {
                println!("{}", written_json(&name, version));
            } else {
                println!("removed {name} version {version}");
            }
        }
        Command::Scale {
            name,
            replicas,
            json,
        } => {
            let version = client()?.scale(name.clone(), replicas).await?;
            if json {
                println!("{}", written_json(&name, version));
            } else {
                println!("scaled {name} to {replicas} replicas, version {version}");
            }
        }
        Command::Stop { name, json } => verb(&client()?, &name, Verb::Stop, json).await?,
        Command::Start { name, json } => verb(&client()?, &name, Verb::Start, json).await?,
        Command::Restart { name, slot, json } => {
            verb(&client()?, &name, Verb::Restart(slot), json).await?;
        }
        Command::Rollback {
            name,
            version,
            json,
        } => verb(&client()?, &name, Verb::Rollback(version), json).await?,
        Command::History { name, json } => {
            let history = client()?.history(name.clone()).await?;
            let Some(history) = history else {
                return Err(Failure::Operation(anyhow::anyhow!(
                    "no service named {name:?} (no versions of it are kept)"
                )));
            };
            if json {
                println!("{}", output::history_json(&history));
            } else {
                print!("{}", output::history_table(&history));
            }
        }
        Command::Services { json } => {
            let services = client()?.services().await?;
            if json {
                println!("{}", output::services_json(&services));
            } else {
                print!("{}", output::services_table(&services));
            }
        }
        Command::Status { name, json } => {
            let service = service_named(&client()?, &name).await?;
            if json {
                println!("{}", output::status_json(&service));
            } else {
                print!("{}", output::status_text(&service));
            }
        }
        Command::Resolve { name, port, json } => {
            let service = service_named(&client()?, &name).await?;
            let endpoints = mob_scheduler::discovery::endpoints(&service, port.as_deref())
                .map_err(|e| Failure::Operation(e.into()))?;
            if json {
                println!("{}", output::endpoints_json(&endpoints));
            } else {
                for endpoint in &endpoints {
                    println!("{}", endpoint.addr());
                }
            }
        }
        Command::Inspect { name, json } => {
            let service = service_named(&client()?, &name).await?;
            let specs = [service.spec];
            if json {
                println!("{}", mob_scheduler::spec_file::to_json(&specs));
            } else {
                print!("{}", mob_scheduler::spec_file::to_toml(&specs)?);
            }
        }
        Command::Keys(command) => keys(command, &client()?).await?,
        Command::Drain { node, undo, json } => {
            client()?.drain(node.clone(), !undo).await?;
            if json {
                println!("{}", serde_json::json!({ "node": node, "draining": !undo }));
            } else {
                match (node, undo) {
                    (None, true) => println!("drain undone: this node takes slots again"),
                    (None, false) => {
                        println!("draining: slots move to other nodes, then local instances stop")
                    }
                    (Some(node), true) => {
                        println!("drain of {node} undone: it takes slots again once it hears of it")
                    }
                    (Some(node), false) => println!(
                        "drain of {node} requested: it moves its slots to other nodes once it hears of it"
                    ),
                }
            }
        }
        Command::ForceLeave { node, json } => {
            client()?.force_leave(node.clone()).await?;
            if json {
                println!("{}", serde_json::json!({ "forgotten": node }));
            } else {
                println!("{node} forgotten: no agent lists it until it starts again");
            }
        }
        Command::Logs {
            name,
            slot,
            follow,
            lines,
        } => {
            let request = log_service::LogRequest {
                service: name,
                slot,
                lines,
                follow,
            };
            client()?.logs(request, |line| println!("{line}")).await?;
        }
        Command::Join { addrs, json } => {
            let addrs = addrs
                .iter()
                .map(|a| config::resolve_seed(a).map_err(|e| Failure::Usage(e.into())))
                .collect::<Result<Vec<_>, _>>()?;
            let joined = client()?.join(addrs).await?;
            if json {
                println!("{}", serde_json::json!({ "joined": joined }));
            } else {
                println!("joined the cluster through {}", joined.join(", "));
            }
        }
        Command::Version { json } => {
            let version = env!("CARGO_PKG_VERSION");
            // The members' versions when an agent answers (none: just ours).
            let members = match client() {
                Ok(client) => client.members().await.ok(),
                Err(_) => None,
            };
            if json {
                let members = members.as_ref().map(|ms| {
                    ms.iter()
                        .map(|m| {
                            serde_json::json!({
                                "name": m.member.id.name,
                                "state": m.member.state.as_str(),
                                "version": m.record.as_ref().map(|r| &r.version),
                            })
                        })
                        .collect::<Vec<_>>()
                });
                println!(
                    "{}",
                    serde_json::json!({ "version": version, "members": members })
                );
            } else {
                println!("mob-agent {version}");
                for m in members.iter().flatten() {
                    let v = m.record.as_ref().map_or("-", |r| r.version.as_str());
                    println!("  {} {} ({})", m.member.id.name, v, m.member.state.as_str());
                }
            }
        }
        Command::Events { json } => {
            let print = |line: &events::EventLine| {
                if json {
                    println!("{}", output::event_json(line));
                } else {
                    println!("{}", output::event_text(line));
                }
            };
            let missed = |n| eprintln!("({n} events missed: this client fell behind)");
            client()?.events(print, missed).await?;
        }
        Command::Stats { json } => {
            let stats = client()?.stats().await?;
            if json {
                println!("{}", output::stats_json(&stats));
            } else {
                print!("{}", output::stats_text(&stats));
            }
        }
    }
    Ok(())
}

/// `mob-agent keys ...`.
async fn keys(command: KeysCommand, client: &Client) -> Result<(), Failure> {
    use control::protocol::KeysRequest;
    // A key names itself by its fingerprint; a fingerprint is 16 hex digits.
    let fingerprint = |text: &str| -> Result<String, Failure> {
        let text = text.trim();
        if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(text.to_ascii_lowercase());
        }
        mob_membership::ClusterKey::from_base64(text)
            .map(|key| key.fingerprint())
            .map_err(|e| {
                Failure::Usage(anyhow::anyhow!(
                    "KEY: {e} (give the key, or its 16-digit fingerprint)"
                ))
            })
    };
    match command {
        KeysCommand::List { json } => {
            let (members, keys) = client.keys().await?;
            if json {
                println!("{}", output::keys_json(&keys));
            } else {
                print!("{}", output::keys_table(&members, &keys));
            }
        }
        KeysCommand::Install { key, json } => {
            let text = if key == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| anyhow::anyhow!("reading stdin: {e}"))?
            } else {
                key
            };
            let key = mob_membership::ClusterKey::from_base64(text.trim())
                .map_err(|e| Failure::Usage(anyhow::anyhow!("KEY: {e}")))?;
            client
                .change_keys(KeysRequest::Install(key.to_base64()))
                .await?;
            if json {
                println!("{}", key_json(&key.fingerprint(), "installed"));
            } else {
                println!(
                    "installed key {} on the cluster: every agent accepts it once it hears; `keys use` it next",
                    key.fingerprint()
                );
            }
        }
        KeysCommand::Use { key, json } => {
            let fingerprint = fingerprint(&key)?;
            client
                .change_keys(KeysRequest::Use(fingerprint.clone()))
                .await?;
            if json {
                println!("{}", key_json(&fingerprint, "used"));
            } else {
                println!(
                    "every agent seals with key {fingerprint} once it hears; `keys list` shows who does"
                );
            }
        }
        KeysCommand::Remove { key, json } => {
            let fingerprint = fingerprint(&key)?;
            client
                .change_keys(KeysRequest::Remove(fingerprint.clone()))
                .await?;
            if json {
                println!("{}", key_json(&fingerprint, "removed"));
            } else {
                println!("removed key {fingerprint}: no agent accepts it once it hears");
            }
        }
    }
    Ok(())
}

/// A `keys` write as `--json` prints it.
fn key_json(fingerprint: &str, done: &str) -> String {
    serde_json::json!({ "fingerprint": fingerprint, "done": done }).to_string()
}

/// The live service `name`, or an error naming it.
/// `stop`, `start`, `restart`, `rollback`: one write, its version printed.
async fn verb(client: &Client, name: &str, verb: Verb, json: bool) -> Result<(), Failure> {
    let version = client.verb(name.to_owned(), verb).await?;
    if json {
        println!("{}", written_json(name, version));
    } else {
        let done = match verb {
            Verb::Stop => "stopped".to_owned(),
            Verb::Start => "started".to_owned(),
            Verb::Restart(None) => "restarting (by its update policy)".to_owned(),
            Verb::Restart(Some(slot)) => format!("slot {slot} restarting"),
            Verb::Rollback(_) => "rolled back".to_owned(),
        };
        println!("{name} {done}: version {version}");
    }
    Ok(())
}

/// `{"name","version"}`: what a verb wrote.
fn written_json(name: &str, version: u64) -> serde_json::Value {
    serde_json::json!({ "name": name, "version": version })
}

async fn service_named(
    client: &Client,
    name: &str,
) -> Result<mob_scheduler::services_view::ServiceView, Failure> {
    client
        .services()
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Failure::Operation(anyhow::anyhow!("no service named {name:?}")))
}

/// Waits until the deploy is done by [`mob_scheduler::deploy_wait::DeployWait`]'s rule: every slot
/// of each service runs its deployed version (or newer), each seen
/// running by one process for a while. A failed slot ends the wait with an
/// error, and so does `timeout`.
async fn wait_running(
    client: &Client,
    versions: Vec<(String, u64)>,
    timeout: std::time::Duration,
) -> Result<(), Failure> {
    use mob_scheduler::deploy_wait::{DeployWait, WaitState};
    let started = tokio::time::Instant::now();
    let mut wait = DeployWait::new(versions);
    loop {
        let services = client.services().await?;
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match wait.observe(&services, elapsed) {
            WaitState::Done => {
                println!("running");
                return Ok(());
            }
            WaitState::Failed(why) => return Err(Failure::Operation(anyhow::anyhow!(why))),
            WaitState::Waiting { ready, slots } if started.elapsed() >= timeout => {
                return Err(Failure::Operation(anyhow::anyhow!(
                    "{ready} of {slots} slots run the new version after {}; see `mob-agent services`",
                    humantime::format_duration(timeout)
                )));
            }
            WaitState::Waiting { .. } => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn socket_path(agent: Option<PathBuf>, env: &Env) -> Result<PathBuf, Failure> {
    agent
        .or_else(|| env.default_data_dir().map(|d| d.join(SOCKET_FILE)))
        .ok_or_else(|| {
            Failure::Usage(anyhow::anyhow!(
                "no --agent given and no default data dir (HOME unset)"
            ))
        })
}

/// What SIGHUP reloads: the log level, from the config file's
/// `log_level` (back to the level the agent started with when the file
/// sets none). Everything else is read at start only.
struct Reload {
    config_file: Option<std::path::PathBuf>,
    default_level: String,
    set_level: logging::SetLevel,
}

impl Reload {
    fn reload(&self) {
        let Some(path) = &self.config_file else {
            tracing::warn!(
                "SIGHUP: no --config file to reload (the log level is reloadable from its log_level); the agent keeps running"
            );
            return;
        };
        let level = match config::reread_log_level(path) {
            Ok(level) => level.unwrap_or_else(|| self.default_level.clone()),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: config file not reloaded; nothing changed");
                return;
            }
        };
        match (self.set_level)(&level) {
            Ok(()) => tracing::info!(log_level = %level, "SIGHUP: config reloaded"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: log level not changed"),
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT. SIGHUP (`systemctl reload`)
/// reloads what is reloadable and never stops the agent.
fn shutdown_signal(reload: Reload) -> Result<impl std::future::Future<Output = ()>, Failure> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => reload.reload(),
            }
        }
    })
}
