//! `ServiceSpec`: what to run, how many, how to restart it, where.
//!
//! This is the typed, validated form stored in the table. Files (TOML or
//! JSON, including the Erlang seed's `{"name","provider","params"}`) are
//! read by [`crate::spec_file`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::Check;
use crate::ports::Ports;
use crate::update::UpdatePolicy;

/// Most replicas a service may ask for.
pub const MAX_REPLICAS: u32 = 1000;
/// Longest service name; names end up in file and container names.
pub const MAX_NAME_LEN: usize = 63;

/// A service the cluster should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique name: `[a-z0-9][a-z0-9._-]*`, at most 63 characters.
    pub name: String,
    /// Provider and its parameters.
    pub params: Params,
    /// Number of slots (instances), 0..=1000; 0 when `every_node`.
    pub replicas: u32,
    /// One slot per eligible node instead of `replicas` (`replicas =
    /// "every-node"`): each node runs its own, keyed by its name (slot
    /// [`EVERY_NODE_SLOT`] of that node's status), with no claim.
    pub every_node: bool,
    /// What a slot does when the cluster partitions.
    pub partition: Partition,
    /// When to restart an instance that exited.
    pub restart: RestartPolicy,
    /// Restarts allowed within `restart_window` before the instance fails.
    pub max_restarts: u32,
    /// Window of `max_restarts`.
    pub restart_window: Duration,
    /// Run time after which the restart budget resets.
    pub stable_after: Duration,
    /// Grace between SIGTERM (or `docker stop`) and SIGKILL.
    pub stop_timeout: Duration,
    /// Services that must be running before this one starts.
    pub depends_on: Vec<String>,
    /// Where the service may run.
    pub constraints: Constraints,
    /// Environment of every instance.
    pub env: BTreeMap<String, String>,
    /// Whether its slots may move to a node that joined, to even out the
    /// load (default true).
    pub rebalance: bool,
    /// Whether instances get the agent's whole environment (less
    /// `MOB_KEY`) rather than a clean one (default false).
    pub inherit_env: bool,
    /// How an instance shows it is healthy; none: up is running.
    pub check: Option<Box<Check>>,
    /// How a new version replaces the running instances.
    pub update: UpdatePolicy,
    /// Kept in the table, but no instance runs (`mob-agent stop`).
    pub stopped: bool,
    /// Bumped by `mob-agent restart`: a new generation is a new instance
    /// spec, so the slots restart by the update policy.
    pub generation: u64,
    /// Bumped per slot by `mob-agent restart --slot K`: a new instance
    /// spec for that slot alone.
    pub slot_generations: BTreeMap<u32, u64>,
    /// Named ports, fixed or picked by the slot's owner.
    pub ports: Ports,
}

/// The slot number every node's instance of an every-node service has:
/// its node's name tells them apart.
pub const EVERY_NODE_SLOT: u32 = 0;

/// What a slot does when the cluster partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Partition {
    /// Both sides run it; the heal keeps one (the default).
    #[default]
    Available,
    /// It runs only on a node that sees a majority of the cluster's nodes,
    /// and never on two nodes at once (see [`crate::quorum`]).
    AtMostOnce,
}

impl Partition {
    /// Parses `available` or `at-most-once`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "available" => Some(Self::Available),
            "at-most-once" => Some(Self::AtMostOnce),
            _ => None,
        }
    }

    /// Canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::AtMostOnce => "at-most-once",
        }
    }
}

/// Which provider runs the service, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Params {
    /// A program, exec'd directly.
    Exec {
        /// argv; never empty.
        command: Vec<String>,
        /// Working directory.
        cwd: Option<String>,
        /// User to run as.
        user: Option<String>,
    },
    /// `sh -c <command>` (the seed's `bash`).
    Shell {
        /// The shell command line.
        command: String,
        /// Working directory.
        cwd: Option<String>,
        /// User to run as.
        user: Option<String>,
    },
    /// A Docker container.
    Docker {
        /// Image reference.
        image: String,
        /// Arguments after the image.
        args: Vec<String>,
        /// Published ports, `docker run -p` syntax.
        ports: Vec<String>,
        /// Volumes, `docker run -v` syntax.
        volumes: Vec<String>,
    },
}

/// Provider names, as nodes advertise them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProviderKind {
    /// `exec`.
    Exec,
    /// `shell` (alias `bash`).
    Shell,
    /// `docker`.
    Docker,
}

impl ProviderKind {
    /// Every provider.
    pub const ALL: [ProviderKind; 3] = [Self::Exec, Self::Shell, Self::Docker];

    /// Parses a provider name; `bash` is an alias of `shell`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "exec" => Some(Self::Exec),
            "shell" | "bash" => Some(Self::Shell),
            "docker" => Some(Self::Docker),
            _ => None,
        }
    }

    /// Canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Shell => "shell",
            Self::Docker => "docker",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Params {
    /// The provider these parameters are for.
    pub fn provider(&self) -> ProviderKind {
        match self {
            Self::Exec { .. } => ProviderKind::Exec,
            Self::Shell { .. } => ProviderKind::Shell,
            Self::Docker { .. } => ProviderKind::Docker,
        }
    }
}

/// When to restart an instance that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Always (exit 0 included).
    Always,
    /// Only after a non-zero exit or a signal (seed alias `on_error`).
    OnFailure,
    /// Never (seed alias `none`).
    Never,
}

impl RestartPolicy {
    /// Parses a policy name or one of the seed's aliases.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "always" => Some(Self::Always),
            "on-failure" | "on_failure" | "on_error" => Some(Self::OnFailure),
            "never" | "none" => Some(Self::Never),
            _ => None,
        }
    }

    /// Canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::Never => "never",
        }
    }
}

/// Placement constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    /// Node tags that must all match.
    pub tags: BTreeMap<String, String>,
}

/// A spec that is wrong, naming the service and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {service}: {field}: {message}")]
pub struct SpecError {
    /// The service's name, or its position in the file when unnamed.
    pub service: String,
    /// The offending field (`params.image`, `replicas`, ...).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    pub(crate) fn new(service: &str, field: &str, message: impl Into<String>) -> Self {
        Self {
            service: service.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Checks a service name.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters long, at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    let mut chars = name.chars();
    if !chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(format!(
            "{name:?} must start with a lowercase letter or digit"
        ));
    }
    if let Some(c) = chars
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; use a-z, 0-9, '.', '_' or '-'"
        ));
    }
    Ok(())
}

impl ServiceSpec {
    /// Whether its slots may move to even out the load: asked for, and
    /// not at-most-once (a move would run it twice, or nowhere for a
    /// while).
    pub fn moves_to_rebalance(&self) -> bool {
        self.rebalance && self.partition == Partition::Available
    }

    /// Whether an instance running `self` can keep running for `other`:
    /// they differ at most in what doesn't reach the process (replicas,
    /// the update policy, placement, dependencies, partition mode), so a
    /// scale or a new update policy restarts nothing.
    pub fn same_instance(&self, other: &ServiceSpec) -> bool {
        let with_ours = ServiceSpec {
            replicas: self.replicas,
            every_node: self.every_node,
            partition: self.partition,
            depends_on: self.depends_on.clone(),
            constraints: self.constraints.clone(),
            rebalance: self.rebalance,
            update: self.update,
            stopped: self.stopped,
            slot_generations: self.slot_generations.clone(),
            ..other.clone()
        };
        *self == with_ours
    }

    /// [`Self::same_instance`] for one slot: its own restart generation
    /// counts too.
    pub fn same_instance_of_slot(&self, other: &ServiceSpec, slot: u32) -> bool {
        self.same_instance(other)
            && self.slot_generations.get(&slot) == other.slot_generations.get(&slot)
    }

    /// Number of slots it has now: none while stopped.
    pub fn live_replicas(&self) -> u32 {
        if self.stopped { 0 } else { self.replicas }
    }

    /// Whether `slot` is one of its slots: below `replicas`, or, of an
    /// every-node service, [`EVERY_NODE_SLOT`] (of each node); none while
    /// stopped.
    pub fn has_slot(&self, slot: u32) -> bool {
        if self.stopped {
            false
        } else if self.every_node {
            slot == EVERY_NODE_SLOT
        } else {
            slot < self.replicas
        }
    }

    /// Checks the rules serde can't: name, ranges, required parameters.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |field: &str, message: String| SpecError::new(&self.name, field, message);
        validate_name(&self.name).map_err(|m| err("name", m))?;
        if self.replicas > MAX_REPLICAS {
            return Err(err(
                "replicas",
                format!("{} is out of range 0..={MAX_REPLICAS}", self.replicas),
            ));
        }
        if self.every_node && self.replicas != 0 {
            return Err(err(
                "replicas",
                "an every-node service has no replica count".into(),
            ));
        }
        if self.every_node && self.partition == Partition::AtMostOnce {
            return Err(err(
                "partition",
                "at-most-once needs counted replicas; every node runs its own slot of an every-node service".into(),
            ));
        }
        for dep in &self.depends_on {
            validate_name(dep).map_err(|m| err("depends_on", m))?;
        }
        crate::ports::validate_ports(&self.ports, self.params.provider() == ProviderKind::Docker)
            .map_err(|(field, m)| err(&field, m))?;
        crate::interpolate::validate(self).map_err(|(field, m)| err(&field, m))?;
        if let Some(check) = &self.check {
            // As an instance will run it: with its variables in place.
            let sample = self
                .interpolated(&crate::interpolate::sample_vars(self))
                .map_err(|m| err("check", m))?;
            let check = sample.check.as_deref().unwrap_or(check);
            check
                .validate()
                .map_err(|(field, m)| err(&format!("check.{field}"), m))?;
        }
        self.update
            .validate()
            .map_err(|(field, m)| err(&format!("update.{field}"), m))?;
        match &self.params {
            Params::Exec { command, .. } if command.is_empty() || command[0].is_empty() => {
                return Err(err("params.command", "is missing or empty".into()));
            }
            Params::Shell { command, .. } if command.trim().is_empty() => {
                return Err(err("params.command", "is missing or empty".into()));
            }
            Params::Docker { image, .. } if image.trim().is_empty() => {
                return Err(err("params.image", "is missing or empty".into()));
            }
            Params::Docker { image, .. } if image.starts_with('-') => {
                return Err(err(
                    "params.image",
                    format!("{image:?} starts with '-' (docker would read it as an option)"),
                ));
            }
            _ => {}
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['\0', '=']) {
                return Err(err(
                    "env",
                    format!("key {key:?} must be non-empty, without NUL or '='"),
                ));
            }
            if value.contains('\0') {
                return Err(err(&format!("env.{key}"), "contains a NUL byte".into()));
            }
        }
        for (field, text) in self.params.texts() {
            if text.contains('\0') {
                return Err(err(
                    &format!("params.{field}"),
                    "contains a NUL byte".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Params {
    /// Every text of the parameters, with the name of its field: what ends
    /// up in an argument vector, a path or a user name.
    fn texts(&self) -> Vec<(&'static str, &str)> {
        fn one<'a>(
            field: &'static str,
            text: &'a Option<String>,
        ) -> Option<(&'static str, &'a str)> {
            text.as_deref().map(|t| (field, t))
        }
        fn many<'a>(field: &'static str, list: &'a [String]) -> Vec<(&'static str, &'a str)> {
            list.iter().map(|t| (field, t.as_str())).collect()
        }
        match self {
            Params::Exec { command, cwd, user } => many("command", command)
                .into_iter()
                .chain(one("cwd", cwd))
                .chain(one("user", user))
                .collect(),
            Params::Shell { command, cwd, user } => [("command", command.as_str())]
                .into_iter()
                .chain(one("cwd", cwd))
                .chain(one("user", user))
                .collect(),
            Params::Docker {
                image,
                args,
                ports,
                volumes,
            } => [("image", image.as_str())]
                .into_iter()
                .chain(many("args", args))
                .chain(many("ports", ports))
                .chain(many("volumes", volumes))
                .collect(),
        }
    }
}

/// Fails if `depends_on` edges among `specs` form a cycle, naming one
/// service on it. Dependencies on services not in `specs` are allowed (they
/// may be deployed later; the dependent waits).
pub fn check_dependency_cycles<'a>(
    specs: impl IntoIterator<Item = &'a ServiceSpec>,
) -> Result<(), SpecError> {
    let graph: HashMap<&str, &[String]> = specs
        .into_iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut mark: HashMap<&str, u8> = HashMap::new();
    let mut names: Vec<&str> = graph.keys().copied().collect();
    names.sort_unstable();
    for start in names {
        if mark.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        // Iterative DFS: (node, next edge index).
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        mark.insert(start, 1);
        while let Some((node, edge)) = stack.pop() {
            let deps = graph.get(node).copied().unwrap_or(&[]);
            if let Some(dep) = deps.get(edge) {
                stack.push((node, edge + 1));
                match mark.get(dep.as_str()).copied().unwrap_or(0) {
                    1 => {
                        let path: Vec<&str> = stack
                            .iter()
                            .map(|(n, _)| *n)
                            .skip_while(|n| *n != dep)
                            .collect();
                        return Err(SpecError::new(
                            node,
                            "depends_on",
                            format!("dependency cycle: {} -> {dep}", path.join(" -> ")),
                        ));
                    }
                    0 if graph.contains_key(dep.as_str()) => {
                        mark.insert(dep.as_str(), 1);
                        stack.push((dep.as_str(), 0));
                    }
                    _ => {}
                }
            } else {
                mark.insert(node, 2);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(name: &str, deps: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            params: Params::Shell {
                command: "sleep 100".into(),
                cwd: None,
                user: None,
            },
            replicas: 1,
            every_node: false,
            partition: Partition::Available,
            restart: RestartPolicy::Always,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            constraints: Constraints::default(),
            env: BTreeMap::new(),
            rebalance: true,
            inherit_env: false,
            check: None,
            update: UpdatePolicy::default(),
            stopped: false,
            generation: 0,
            slot_generations: BTreeMap::new(),
            ports: Ports::new(),
        }
    }

    #[test]
    fn cycles_are_found_and_named() {
        let ok = [
            spec("web", &["db"]),
            spec("db", &[]),
            spec("api", &["db", "cache"]),
        ];
        assert!(check_dependency_cycles(&ok).is_ok());
        let cyc = [spec("a", &["b"]), spec("b", &["c"]), spec("c", &["a"])];
        let err = check_dependency_cycles(&cyc).unwrap_err();
        assert_eq!(err.field, "depends_on");
        assert!(err.message.contains("a -> b -> c -> a"), "{err}");
        let selfdep = [spec("x", &["x"])];
        assert!(
            check_dependency_cycles(&selfdep)
                .unwrap_err()
                .message
                .contains("x -> x")
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("web-1.a_b").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("Web").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").unwrap_err().contains("'/'"));
        assert!(validate_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn policies_and_providers_accept_seed_aliases() {
        assert_eq!(RestartPolicy::parse("none"), Some(RestartPolicy::Never));
        assert_eq!(
            RestartPolicy::parse("on_error"),
            Some(RestartPolicy::OnFailure)
        );
        assert_eq!(ProviderKind::parse("bash"), Some(ProviderKind::Shell));
        assert_eq!(ProviderKind::parse("podman"), None);
    }
}
