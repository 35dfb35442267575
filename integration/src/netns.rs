//! Hosts in their own network namespaces (`scripts/netns.sh`), removed on
//! drop. Needs root and iproute2.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use anyhow::bail;

/// A set of namespace hosts `1..=n` on one bridge.
pub struct Netns {
    prefix: String,
    hosts: usize,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/netns.sh")
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("bash").arg(script()).args(args).output()?;
    if !out.status.success() {
        bail!(
            "netns.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Netns {
    /// Whether this process can make namespaces (root, with `ip`).
    pub fn available() -> bool {
        nix::unistd::geteuid().is_root()
            && Command::new("ip")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
    }

    /// Whether a test may use namespaces: `false` (skip, with a note) when
    /// unavailable, a panic when `MOB_REQUIRE_NETNS` says they must be.
    pub fn usable() -> bool {
        crate::requirement::met(
            Self::available(),
            "MOB_REQUIRE_NETNS",
            "network namespaces are unavailable (need root and iproute2)",
        )
    }

    /// Starts an agent `h<i>` on every host, port 7946, all joining `h1`.
    pub fn start_agents(
        &self,
        root: &std::path::Path,
        key: &std::path::Path,
    ) -> anyhow::Result<Vec<crate::Agent>> {
        (1..=self.hosts)
            .map(|i| {
                let mut spec = crate::AgentSpec::local(&format!("h{i}"), root, key);
                spec.bind = std::net::SocketAddr::new(self.ip(i), 7946);
                spec.netns = Some(self.ns(i));
                if i > 1 {
                    spec.join.push(std::net::SocketAddr::new(self.ip(1), 7946));
                }
                crate::Agent::start(spec)
            })
            .collect()
    }

    /// Creates `hosts` hosts. `tag` keeps concurrent tests apart.
    pub fn up(tag: &str, hosts: usize) -> anyhow::Result<Self> {
        let prefix = format!("mob{}{}", tag, std::process::id() % 10_000);
        let _ = run(&["down", &prefix]);
        let net = Self { prefix, hosts };
        run(&["up", &net.prefix, &hosts.to_string()])?;
        Ok(net)
    }

    /// Namespace name of host `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    /// Address of host `i`.
    pub fn ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 99, 0, u8::try_from(i).unwrap_or(u8::MAX)))
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// Unplugs host `i` from the bridge.
    pub fn cut(&self, i: usize) -> anyhow::Result<()> {
        run(&["cut", &self.prefix, &i.to_string()])
    }

    /// Plugs host `i` back.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        run(&["heal", &self.prefix, &i.to_string()])
    }

    /// Partitions the hosts of `side` from all the others: each side still
    /// reaches its own hosts (blackhole routes, both ways).
    pub fn split(&self, side: &[usize]) -> anyhow::Result<()> {
        self.routes("block", side)
    }

    /// Undoes [`Netns::split`] of the same `side`.
    pub fn unsplit(&self, side: &[usize]) -> anyhow::Result<()> {
        self.routes("unblock", side)
    }

    /// Drops what the hosts of `side` send to all the others (blackhole
    /// routes on `side` only): the other way still works.
    pub fn block_from(&self, side: &[usize]) -> anyhow::Result<()> {
        self.one_way("block", side)
    }

    /// Undoes [`Netns::block_from`] of the same `side`.
    pub fn unblock_from(&self, side: &[usize]) -> anyhow::Result<()> {
        self.one_way("unblock", side)
    }

    fn one_way(&self, cmd: &str, side: &[usize]) -> anyhow::Result<()> {
        for i in side {
            for j in (1..=self.hosts).filter(|j| !side.contains(j)) {
                run(&[cmd, &self.prefix, &i.to_string(), &j.to_string()])?;
            }
        }
        Ok(())
    }

    fn routes(&self, cmd: &str, side: &[usize]) -> anyhow::Result<()> {
        for i in side {
            for j in (1..=self.hosts).filter(|j| !side.contains(j)) {
                run(&[cmd, &self.prefix, &i.to_string(), &j.to_string()])?;
                run(&[cmd, &self.prefix, &j.to_string(), &i.to_string()])?;
            }
        }
        Ok(())
    }
}

/// Moves the calling thread (only it: `setns`) into the network namespace
/// `ns`, so that its sockets are that host's.
pub fn enter(ns: &str) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    let netns = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["down", &self.prefix]);
    }
}
