//! `mob-chaos`: the long chaos run. Faults drawn from a seed on real agents
//! in network namespaces, operator writes during them, and mob's promises
//! checked after every heal; prints what it injected and found, and exits
//! 1 if a promise broke. Needs root (namespaces) and a built `mob-agent`
//! (`$MOB_AGENT_BIN`). See `scripts/chaos.sh`.
//!
//! ```text
//! mob-chaos [--seed S] [--minutes M | --rounds N] [--hosts H] [--fault-secs S]
//! ```

use std::time::Duration;

use anyhow::{Context, bail};
use mob_integration::chaos::{Config, run};

fn main() -> anyhow::Result<()> {
    let mut config = Config::rounds(1, 10);
    config.stop_at_violation = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || -> anyhow::Result<u64> {
            let text = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            text.parse()
                .with_context(|| format!("{flag} {text}: not a whole number"))
        };
        match flag.as_str() {
            "--seed" => config.seed = value()?,
            "--minutes" => {
                config.duration = Some(Duration::from_secs(value()? * 60));
                config.rounds = None;
            }
            "--rounds" => {
                config.rounds = Some(usize::try_from(value()?)?);
                config.duration = None;
            }
            "--hosts" => config.hosts = usize::try_from(value()?)?,
            "--fault-secs" => config.fault_secs = value()?,
            "--stop-at-violation" => config.stop_at_violation = true,
            "-h" | "--help" => {
                println!(
                    "mob-chaos [--seed S] [--minutes M | --rounds N] [--hosts H] [--fault-secs S] [--stop-at-violation]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if config.hosts < 3 {
        bail!(
            "--hosts {}: at least 3 (a partition needs a majority side)",
            config.hosts
        );
    }
    let report = run(&config)?;
    println!("{report}");
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
