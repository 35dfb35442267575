//! Service specs as operators write them: TOML or JSON, one service or a
//! list (`[[services]]` in TOML, an array or `{"services": [...]}` in JSON).
//! The Erlang seed's `{"name", "provider", "params"}` is accepted as is.
//!
//! Every error names the service and the field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{
    Check, DEFAULT_FAILURES, DEFAULT_GRACE, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Probe,
};
use crate::ports::PortSpec;
use crate::spec::{
    Constraints, Params, Partition, ProviderKind, RestartPolicy, ServiceSpec, SpecError,
};
use crate::update::UpdatePolicy;

/// Defaults of optional fields.
const DEFAULT_MAX_RESTARTS: u32 = 5;
const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(10);
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A spec as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicas: Option<RawReplicas>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_restarts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart_window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stable_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "RawConstraints::is_empty")]
    constraints: RawConstraints,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rebalance: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inherit_env: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check: Option<RawCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    update: Option<RawUpdate>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    ports: BTreeMap<String, RawPort>,
    #[serde(default)]
    params: BTreeMap<String, ParamValue>,
}

/// A port as written: `http = 0`, `admin = 9100`, or `{ port = 0, to =
/// 8080 }` (`port` defaults to 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Table(RawPortTable),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<i64>,
}

impl RawPort {
    fn into_port(self, service: &str, name: &str) -> Result<PortSpec, SpecError> {
        let number = |field: &str, n: i64, least: i64| {
            u16::try_from(n)
                .ok()
                .filter(|n| i64::from(*n) >= least)
                .ok_or_else(|| {
                    SpecError::new(
                        service,
                        &format!("ports.{name}{field}"),
                        format!("{n} is out of range {least}..=65535"),
                    )
                })
        };
        Ok(match self {
            RawPort::Number(n) => PortSpec {
                host: number("", n, 0)?,
                to: None,
            },
            RawPort::Table(t) => PortSpec {
                host: number(".port", t.port.unwrap_or(0), 0)?,
                to: t.to.map(|to| number(".to", to, 1)).transpose()?,
            },
        })
    }

    fn from_port(port: &PortSpec) -> Self {
        match port.to {
            None => RawPort::Number(i64::from(port.host)),
            Some(to) => RawPort::Table(RawPortTable {
                port: Some(i64::from(port.host)),
                to: Some(i64::from(to)),
            }),
        }
    }
}

/// `[check]` as written: exactly one of `http`, `tcp`, `command`.
/// `[update]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_parallel: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_healthy_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    healthy_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auto_revert: Option<bool>,
}

impl RawUpdate {
    fn into_policy(self, service: &str) -> Result<UpdatePolicy, SpecError> {
        let default = UpdatePolicy::default();
        let field = |f: &str| format!("update.{f}");
        let max_parallel = match self.max_parallel {
            None => default.max_parallel,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n <= crate::spec::MAX_REPLICAS)
                .ok_or_else(|| {
                    SpecError::new(
                        service,
                        &field("max_parallel"),
                        format!(
                            "{n} is out of range 0..={} (0: all at once)",
                            crate::spec::MAX_REPLICAS
                        ),
                    )
                })?,
        };
        Ok(UpdatePolicy {
            max_parallel,
            min_healthy_time: duration(
                service,
                &field("min_healthy_time"),
                self.min_healthy_time.as_ref(),
                default.min_healthy_time,
            )?,
            healthy_deadline: duration(
                service,
                &field("healthy_deadline"),
                self.healthy_deadline.as_ref(),
                default.healthy_deadline,
            )?,
            auto_revert: self.auto_revert.unwrap_or(default.auto_revert),
        })
    }

    fn from_policy(policy: &UpdatePolicy) -> Option<Self> {
        let ms = |d: Duration| Some(format!("{}ms", d.as_millis()));
        (*policy != UpdatePolicy::default()).then(|| Self {
            max_parallel: Some(i64::from(policy.max_parallel)),
            min_healthy_time: ms(policy.min_healthy_time),
            healthy_deadline: ms(policy.healthy_deadline),
            auto_revert: Some(policy.auto_revert),
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<ParamValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failures: Option<i64>,
}

impl RawCheck {
    fn into_check(self, service: &str) -> Result<Check, SpecError> {
        let err = |field: &str, message: String| {
            SpecError::new(service, &format!("check.{field}"), message)
        };
        let probe = match (self.http, self.tcp, self.command) {
            (Some(url), None, None) => Probe::Http(url),
            (None, Some(addr), None) => Probe::Tcp(addr),
            (None, None, Some(ParamValue::List(argv))) => Probe::Command(argv),
            (None, None, Some(ParamValue::Text(line))) => Probe::Command(
                shlex::split(&line)
                    .ok_or_else(|| err("command", format!("{line:?} has unbalanced quotes")))?,
            ),
            _ => {
                return Err(SpecError::new(
                    service,
                    "check",
                    "give exactly one of http, tcp or command",
                ));
            }
        };
        let field = |f: &str| format!("check.{f}");
        Ok(Check {
            probe,
            interval: duration(
                service,
                &field("interval"),
                self.interval.as_ref(),
                DEFAULT_INTERVAL,
            )?,
            timeout: duration(
                service,
                &field("timeout"),
                self.timeout.as_ref(),
                DEFAULT_TIMEOUT,
            )?,
            grace: duration(service, &field("grace"), self.grace.as_ref(), DEFAULT_GRACE)?,
            failures: count(service, &field("failures"), self.failures, DEFAULT_FAILURES)?,
        })
    }

    fn from_check(check: &Check) -> Self {
        let ms = |d: Duration| Some(format!("{}ms", d.as_millis()));
        let mut raw = RawCheck {
            interval: ms(check.interval),
            timeout: ms(check.timeout),
            grace: ms(check.grace),
            failures: Some(i64::from(check.failures)),
            ..RawCheck::default()
        };
        match &check.probe {
            Probe::Http(url) => raw.http = Some(url.clone()),
            Probe::Tcp(addr) => raw.tcp = Some(addr.clone()),
            Probe::Command(argv) => raw.command = Some(ParamValue::List(argv.clone())),
        }
        raw
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConstraints {
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

impl RawConstraints {
    fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

/// `replicas`: a count, or `"every-node"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum RawReplicas {
    Count(i64),
    Word(String),
}

/// The word of `replicas` that asks for one slot per eligible node.
const EVERY_NODE: &str = "every-node";

/// A provider parameter: text or a list of text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum ParamValue {
    Text(String),
    List(Vec<String>),
}

/// Parses a spec file: JSON if it starts with `{` or `[{`/`[]`, else TOML.
pub fn parse_specs(text: &str) -> Result<Vec<ServiceSpec>, SpecError> {
    let trimmed = text.trim_start();
    let json = trimmed.starts_with('{')
        || (trimmed.starts_with('[')
            && matches!(trimmed[1..].trim_start().chars().next(), Some('{' | ']')));
    let raws = if json {
        raw_from_json(text)?
    } else {
        raw_from_toml(text)?
    };
    if raws.is_empty() {
        return Err(SpecError::new("-", "services", "the file holds no service"));
    }
    let specs = raws
        .into_iter()
        .map(RawSpec::into_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashSet::new();
    for s in &specs {
        if !seen.insert(s.name.as_str()) {
            return Err(SpecError::new(&s.name, "name", "appears twice in the file"));
        }
    }
    Ok(specs)
}

fn parse_error(at: &str, e: impl std::fmt::Display) -> SpecError {
    SpecError::new(at, "-", e.to_string().trim().replace('\n', " "))
}

fn raw_from_json(text: &str) -> Result<Vec<RawSpec>, SpecError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| parse_error("(json)", e))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut map)
            if map.contains_key("services") && !map.contains_key("name") =>
        {
            match map.remove("services") {
                Some(serde_json::Value::Array(items)) => items,
                _ => return Err(SpecError::new("-", "services", "must be an array")),
            }
        }
        other => vec![other],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = name_or_index(item.get("name").and_then(|n| n.as_str()), i);
            serde_json::from_value(item).map_err(|e| parse_error(&at, e))
        })
        .collect()
}

fn raw_from_toml(text: &str) -> Result<Vec<RawSpec>, SpecError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_error("(toml)", e))?;
    let items = if table.contains_key("services") && !table.contains_key("name") {
        if table.len() > 1 {
            let extra = table
                .keys()
                .find(|k| *k != "services")
                .cloned()
                .unwrap_or_default();
            return Err(SpecError::new(
                "-",
                &extra,
                "unknown top-level key next to [[services]]",
            ));
        }
        match table.remove("services") {
            Some(toml::Value::Array(items)) => items,
            _ => {
                return Err(SpecError::new(
                    "-",
                    "services",
                    "must be an array of tables ([[services]])",
                ));
            }
        }
    } else {
        vec![toml::Value::Table(table)]
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = name_or_index(item.get("name").and_then(|n| n.as_str()), i);
            item.try_into().map_err(|e| parse_error(&at, e))
        })
        .collect()
}

fn name_or_index(name: Option<&str>, index: usize) -> String {
    name.map_or_else(|| format!("#{}", index + 1), str::to_owned)
}

/// Renders specs as a TOML file that [`parse_specs`] reads back.
pub fn to_toml(specs: &[ServiceSpec]) -> Result<String, SpecError> {
    #[derive(Serialize)]
    struct File<'a> {
        services: &'a [RawSpec],
    }
    let raws: Vec<RawSpec> = specs.iter().map(RawSpec::from_spec).collect();
    toml::to_string(&File { services: &raws }).map_err(|e| parse_error("(toml)", e))
}

/// One spec as the JSON value [`parse_specs`] reads back.
pub fn to_json_value(spec: &ServiceSpec) -> serde_json::Value {
    serde_json::to_value(RawSpec::from_spec(spec)).unwrap_or_default()
}

/// Renders specs as a JSON array that [`parse_specs`] reads back.
pub fn to_json(specs: &[ServiceSpec]) -> String {
    let raws: Vec<RawSpec> = specs.iter().map(RawSpec::from_spec).collect();
    serde_json::to_string_pretty(&raws).unwrap_or_default()
}

fn duration(
    service: &str,
    field: &str,
    text: Option<&String>,
    default: Duration,
) -> Result<Duration, SpecError> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            SpecError::new(
                service,
                field,
                format!("bad duration {t:?}: {e} (e.g. \"500ms\", \"10s\", \"1m\")"),
            )
        }),
    }
}

fn count(service: &str, field: &str, value: Option<i64>, default: u32) -> Result<u32, SpecError> {
    match value {
        None => Ok(default),
        Some(v) => u32::try_from(v)
            .map_err(|_| SpecError::new(service, field, format!("{v} is out of range"))),
    }
}

impl RawSpec {
    fn into_spec(self) -> Result<ServiceSpec, SpecError> {
        let name = self.name.clone();
        let err = |field: &str, message: String| SpecError::new(&name, field, message);
        let provider = ProviderKind::parse(&self.provider).ok_or_else(|| {
            err(
                "provider",
                format!(
                    "unknown provider {:?} (exec, shell, bash, docker)",
                    self.provider
                ),
            )
        })?;
        let restart = match &self.restart {
            None => RestartPolicy::Always,
            Some(r) => RestartPolicy::parse(r).ok_or_else(|| {
                err(
                    "restart",
                    format!("unknown policy {r:?} (always, on-failure, never)"),
                )
            })?,
        };
        let (replicas, every_node) = match self.replicas {
            None => (1, false),
            Some(RawReplicas::Word(w)) if w == EVERY_NODE => (0, true),
            Some(RawReplicas::Word(w)) => {
                return Err(err(
                    "replicas",
                    format!("{w:?} is neither a count nor \"{EVERY_NODE}\""),
                ));
            }
            Some(RawReplicas::Count(r)) => (
                u32::try_from(r)
                    .ok()
                    .filter(|r| *r <= crate::spec::MAX_REPLICAS)
                    .ok_or_else(|| {
                        err(
                            "replicas",
                            format!("{r} is out of range 0..={}", crate::spec::MAX_REPLICAS),
                        )
                    })?,
                false,
            ),
        };
        let partition = match &self.partition {
            None => Partition::Available,
            Some(p) => Partition::parse(p).ok_or_else(|| {
                err(
                    "partition",
                    format!("unknown mode {p:?} (available, at-most-once)"),
                )
            })?,
        };
        let spec = ServiceSpec {
            params: params(&name, provider, self.params)?,
            replicas,
            every_node,
            partition,
            restart,
            max_restarts: count(
                &name,
                "max_restarts",
                self.max_restarts,
                DEFAULT_MAX_RESTARTS,
            )?,
            restart_window: duration(
                &name,
                "restart_window",
                self.restart_window.as_ref(),
                DEFAULT_RESTART_WINDOW,
            )?,
            stable_after: duration(
                &name,
                "stable_after",
                self.stable_after.as_ref(),
                DEFAULT_STABLE_AFTER,
            )?,
            stop_timeout: duration(
                &name,
                "stop_timeout",
                self.stop_timeout.as_ref(),
                DEFAULT_STOP_TIMEOUT,
            )?,
            depends_on: self.depends_on,
            constraints: Constraints {
                tags: self.constraints.tags,
            },
            env: self.env,
            rebalance: self.rebalance.unwrap_or(true),
            inherit_env: self.inherit_env.unwrap_or(false),
            check: self
                .check
                .map(|c| c.into_check(&name).map(Box::new))
                .transpose()?,
            update: self
                .update
                .map(|u| u.into_policy(&name))
                .transpose()?
                .unwrap_or_default(),
            stopped: false,
            generation: 0,
            slot_generations: BTreeMap::new(),
            ports: self
                .ports
                .into_iter()
                .map(|(port, raw)| Ok((port.clone(), raw.into_port(&name, &port)?)))
                .collect::<Result<_, SpecError>>()?,
            name: self.name,
        };
        spec.validate()?;
        Ok(spec)
    }

    fn from_spec(spec: &ServiceSpec) -> Self {
        let text = |s: &str| ParamValue::Text(s.to_owned());
        let list = |l: &[String]| ParamValue::List(l.to_vec());
        let mut params = BTreeMap::new();
        let optional =
            |params: &mut BTreeMap<String, ParamValue>, key: &str, v: &Option<String>| {
                if let Some(v) = v {
                    params.insert(key.to_owned(), text(v));
                }
            };
        match &spec.params {
            Params::Exec { command, cwd, user } => {
                params.insert("command".into(), list(command));
                optional(&mut params, "cwd", cwd);
                optional(&mut params, "user", user);
            }
            Params::Shell { command, cwd, user } => {
                params.insert("command".into(), text(command));
                optional(&mut params, "cwd", cwd);
                optional(&mut params, "user", user);
            }
            Params::Docker {
                image,
                args,
                ports,
                volumes,
            } => {
                params.insert("image".into(), text(image));
                params.insert("args".into(), list(args));
                params.insert("ports".into(), list(ports));
                params.insert("volumes".into(), list(volumes));
            }
        }
        let ms = |d: Duration| Some(format!("{}ms", d.as_millis()));
        Self {
            name: spec.name.clone(),
            provider: spec.params.provider().as_str().to_owned(),
            replicas: Some(if spec.every_node {
                RawReplicas::Word(EVERY_NODE.to_owned())
            } else {
                RawReplicas::Count(i64::from(spec.replicas))
            }),
            partition: (spec.partition != Partition::Available)
                .then(|| spec.partition.as_str().to_owned()),
            restart: Some(spec.restart.as_str().to_owned()),
            max_restarts: Some(i64::from(spec.max_restarts)),
            restart_window: ms(spec.restart_window),
            stable_after: ms(spec.stable_after),
            stop_timeout: ms(spec.stop_timeout),
            depends_on: spec.depends_on.clone(),
            constraints: RawConstraints {
                tags: spec.constraints.tags.clone(),
            },
            env: spec.env.clone(),
            rebalance: (!spec.rebalance).then_some(false),
            inherit_env: spec.inherit_env.then_some(true),
            check: spec.check.as_deref().map(RawCheck::from_check),
            update: RawUpdate::from_policy(&spec.update),
            ports: spec
                .ports
                .iter()
                .map(|(name, port)| (name.clone(), RawPort::from_port(port)))
                .collect(),
            params,
        }
    }
}

/// Typed parameters of `provider`, naming the parameter at fault.
fn params(
    service: &str,
    provider: ProviderKind,
    mut raw: BTreeMap<String, ParamValue>,
) -> Result<Params, SpecError> {
    let err =
        |key: &str, message: String| SpecError::new(service, &format!("params.{key}"), message);
    let take_text =
        |raw: &mut BTreeMap<String, ParamValue>, key: &str| -> Result<Option<String>, SpecError> {
            match raw.remove(key) {
                None => Ok(None),
                Some(ParamValue::Text(t)) => Ok(Some(t)),
                Some(ParamValue::List(_)) => Err(err(key, "must be a string".into())),
            }
        };
    // A list, or a string split shell-style ("" is the empty list).
    let take_words =
        |raw: &mut BTreeMap<String, ParamValue>, key: &str| -> Result<Vec<String>, SpecError> {
            match raw.remove(key) {
                None => Ok(Vec::new()),
                Some(ParamValue::List(l)) => Ok(l),
                Some(ParamValue::Text(t)) => {
                    shlex::split(&t).ok_or_else(|| err(key, format!("{t:?} has unbalanced quotes")))
                }
            }
        };
    let take_list =
        |raw: &mut BTreeMap<String, ParamValue>, key: &str| -> Result<Vec<String>, SpecError> {
            match raw.remove(key) {
                None => Ok(Vec::new()),
                Some(ParamValue::List(l)) => Ok(l),
                Some(ParamValue::Text(t)) if t.is_empty() => Ok(Vec::new()),
                Some(ParamValue::Text(t)) => Ok(vec![t]),
            }
        };
    let params = match provider {
        ProviderKind::Exec => Params::Exec {
            command: take_words(&mut raw, "command")?,
            cwd: take_text(&mut raw, "cwd")?,
            user: take_text(&mut raw, "user")?,
        },
        ProviderKind::Shell => Params::Shell {
            command: match raw.remove("command") {
                None => String::new(),
                Some(ParamValue::Text(t)) => t,
                Some(ParamValue::List(l)) => shlex::try_join(l.iter().map(String::as_str))
                    .map_err(|e| err("command", e.to_string()))?,
            },
            cwd: take_text(&mut raw, "cwd")?,
            user: take_text(&mut raw, "user")?,
        },
        ProviderKind::Docker => Params::Docker {
            image: take_text(&mut raw, "image")?.unwrap_or_default(),
            args: take_words(&mut raw, "args")?,
            ports: take_list(&mut raw, "ports")?,
            volumes: take_list(&mut raw, "volumes")?,
        },
    };
    if let Some(key) = raw.keys().next() {
        let known = match provider {
            ProviderKind::Exec | ProviderKind::Shell => "command, cwd, user",
            ProviderKind::Docker => "image, args, ports, volumes",
        };
        return Err(err(
            key,
            format!("unknown parameter for provider {provider} (known: {known})"),
        ));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> ServiceSpec {
        let mut specs = parse_specs(text).unwrap();
        assert_eq!(specs.len(), 1);
        specs.remove(0)
    }

    fn error(text: &str) -> SpecError {
        parse_specs(text).unwrap_err()
    }

    #[test]
    fn design_toml_example_parses() {
        let s = one(r#"
name = "web"
provider = "docker"           # exec | shell | bash | docker
replicas = 2
restart = "always"
depends_on = ["db"]
constraints = { tags = { zone = "a" } }
env = { RUST_LOG = "info" }
[params]
image = "mob-test/busybox"
args = ["httpd", "-f", "-p", "8080"]
"#);
        assert_eq!(s.name, "web");
        assert_eq!(s.replicas, 2);
        assert_eq!(s.depends_on, vec!["db"]);
        assert_eq!(s.constraints.tags["zone"], "a");
        assert_eq!(
            s.params,
            Params::Docker {
                image: "mob-test/busybox".into(),
                args: vec!["httpd".into(), "-f".into(), "-p".into(), "8080".into()],
                ports: vec![],
                volumes: vec![]
            }
        );
    }

    #[test]
    fn seed_json_is_accepted_as_is() {
        let s = one(
            r#"{"name": "redis-01", "provider": "docker", "params": {"image": "redis", "args": ""}}"#,
        );
        assert_eq!(s.params.provider(), ProviderKind::Docker);
        assert_eq!(s.replicas, 1);
        assert_eq!(s.restart, RestartPolicy::Always);
        let s = one(
            r#"{"name": "job", "provider": "bash", "restart": "on_error", "params": {"command": "echo hi"}}"#,
        );
        assert_eq!(s.params.provider(), ProviderKind::Shell);
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        let s = one(
            r#"{"name": "j2", "provider": "shell", "restart": "none", "params": {"command": "true"}}"#,
        );
        assert_eq!(s.restart, RestartPolicy::Never);
    }

    #[test]
    fn lists_in_both_formats() {
        let toml = "[[services]]\nname = \"a\"\nprovider = \"exec\"\nparams = { command = \"sleep 10\" }\n[[services]]\nname = \"b\"\nprovider = \"shell\"\nparams = { command = \"sleep 10\" }\n";
        let specs = parse_specs(toml).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            specs[0].params,
            Params::Exec {
                command: vec!["sleep".into(), "10".into()],
                cwd: None,
                user: None
            }
        );
        let json = r#"[{"name":"a","provider":"exec","params":{"command":["sleep","1"]}},{"name":"b","provider":"exec","params":{"command":"x"}}]"#;
        assert_eq!(parse_specs(json).unwrap().len(), 2);
        let wrapped = r#"{"services":[{"name":"a","provider":"exec","params":{"command":"x"}}]}"#;
        assert_eq!(parse_specs(wrapped).unwrap().len(), 1);
    }

    #[test]
    fn every_invalid_case_names_its_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"name": "", "provider": "exec", "params": {"command": "x"}}"#,
                "name",
                "empty",
            ),
            (
                r#"{"name": "Bad Name", "provider": "exec", "params": {"command": "x"}}"#,
                "name",
                "lowercase",
            ),
            (
                r#"{"name": "a", "provider": "podman", "params": {}}"#,
                "provider",
                "podman",
            ),
            (
                r#"{"name": "a", "provider": "exec", "colour": "red", "params": {"command": "x"}}"#,
                "-",
                "colour",
            ),
            (
                r#"{"name": "a", "provider": "exec", "replicas": 5000, "params": {"command": "x"}}"#,
                "replicas",
                "5000",
            ),
            (
                r#"{"name": "a", "provider": "exec", "replicas": -1, "params": {"command": "x"}}"#,
                "replicas",
                "-1",
            ),
            (
                r#"{"name": "a", "provider": "exec", "restart_window": "soon", "params": {"command": "x"}}"#,
                "restart_window",
                "soon",
            ),
            (
                r#"{"name": "a", "provider": "exec", "restart": "sometimes", "params": {"command": "x"}}"#,
                "restart",
                "sometimes",
            ),
            (
                r#"{"name": "a", "provider": "exec", "params": {}}"#,
                "params.command",
                "missing",
            ),
            (
                r#"{"name": "a", "provider": "docker", "params": {"args": "x"}}"#,
                "params.image",
                "missing",
            ),
            (
                r#"{"name": "a", "provider": "docker", "params": {"image": "x", "entrypoint": "y"}}"#,
                "params.entrypoint",
                "unknown parameter",
            ),
            (
                r#"{"name": "a", "provider": "exec", "params": {"command": "x", "cwd": ["a"]}}"#,
                "params.cwd",
                "string",
            ),
            (
                r#"{"name": "a", "provider": "exec", "env": {"A=B": "x"}, "params": {"command": "x"}}"#,
                "env",
                "'='",
            ),
            (
                r#"{"name": "a", "provider": "exec", "env": {"A\u0000": "x"}, "params": {"command": "x"}}"#,
                "env",
                "NUL",
            ),
            (
                r#"{"name": "a", "provider": "exec", "env": {"A": "x\u0000"}, "params": {"command": "x"}}"#,
                "env.A",
                "NUL",
            ),
            (
                r#"{"name": "a", "provider": "exec", "params": {"command": ["x", "y\u0000"]}}"#,
                "params.command",
                "NUL",
            ),
            (
                r#"{"name": "a", "provider": "shell", "params": {"command": "x", "cwd": "/\u0000"}}"#,
                "params.cwd",
                "NUL",
            ),
            (
                r#"{"name": "a", "provider": "docker", "params": {"image": "-v/:/host"}}"#,
                "params.image",
                "'-'",
            ),
            (
                r#"{"name": "a", "provider": "exec", "params": {"command": "'unclosed"}}"#,
                "params.command",
                "quotes",
            ),
            (
                r#"{"provider": "exec", "params": {"command": "x"}}"#,
                "-",
                "name",
            ),
            (
                r#"[{"name": "a", "provider": "exec", "params": {"command": "x"}}, {"name": "a", "provider": "exec", "params": {"command": "x"}}]"#,
                "name",
                "twice",
            ),
            (
                "name = \"a\"\nprovider = \"exec\"\n[params]\ncommand = \"x\"\n[constraints]\nzone = \"a\"\n",
                "-",
                "zone",
            ),
            (
                "[[services]]\nname = \"a\"\nprovider = \"exec\"\nparams = { command = \"x\" }\n[extra]\n",
                "extra",
                "unknown",
            ),
            ("this is = not toml", "-", "toml"),
            ("[]", "services", "no service"),
        ];
        for (text, field, needle) in cases {
            let e = error(text);
            assert_eq!(&e.field, field, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn every_node_and_at_most_once_parse_round_trip_and_are_checked() {
        let every = &parse_specs(
            r#"{"name": "a", "provider": "exec", "replicas": "every-node", "params": {"command": "x"}}"#,
        )
        .unwrap()[0];
        assert!(every.every_node);
        assert_eq!(every.replicas, 0);
        assert!(every.has_slot(crate::spec::EVERY_NODE_SLOT) && !every.has_slot(1));
        let once = &parse_specs(
            "name = \"b\"\nprovider = \"exec\"\nreplicas = 3\npartition = \"at-most-once\"\nparams = { command = \"x\" }\n",
        )
        .unwrap()[0];
        assert_eq!(once.partition, Partition::AtMostOnce);
        assert!(!once.moves_to_rebalance());
        let both = [every.clone(), once.clone()];
        assert_eq!(parse_specs(&to_toml(&both).unwrap()).unwrap(), both);
        assert_eq!(parse_specs(&to_json(&both)).unwrap(), both);
        for (text, field, says) in [
            (
                r#"{"name": "a", "provider": "exec", "replicas": "all", "params": {"command": "x"}}"#,
                "replicas",
                "every-node",
            ),
            (
                r#"{"name": "a", "provider": "exec", "partition": "cp", "params": {"command": "x"}}"#,
                "partition",
                "at-most-once",
            ),
            (
                r#"{"name": "a", "provider": "exec", "replicas": "every-node", "partition": "at-most-once", "params": {"command": "x"}}"#,
                "partition",
                "counted replicas",
            ),
        ] {
            let err = parse_specs(text).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains(says), "{err}");
        }
    }

    #[test]
    fn checks_parse_round_trip_and_name_the_field_at_fault() {
        let web = &parse_specs(
            r#"
name = "web"
provider = "exec"
params = { command = ["busybox", "httpd", "-f"] }
[check]
http = "http://127.0.0.1:8080/health"
interval = "500ms"
failures = 2
"#,
        )
        .unwrap()[0];
        let check = web.check.as_ref().unwrap();
        assert_eq!(
            check.probe,
            Probe::Http("http://127.0.0.1:8080/health".into())
        );
        assert_eq!(check.interval, Duration::from_millis(500));
        assert_eq!(check.timeout, DEFAULT_TIMEOUT);
        assert_eq!(check.grace, DEFAULT_GRACE);
        assert_eq!(check.failures, 2);
        let cmd = &parse_specs(
            r#"{"name": "db", "provider": "exec", "params": {"command": "x"}, "check": {"command": "test -f '/tmp/a b'"}}"#,
        )
        .unwrap()[0];
        assert_eq!(
            cmd.check.as_ref().unwrap().probe,
            Probe::Command(vec!["test".into(), "-f".into(), "/tmp/a b".into()])
        );
        let both = [web.clone(), cmd.clone()];
        assert_eq!(parse_specs(&to_toml(&both).unwrap()).unwrap(), both);
        assert_eq!(parse_specs(&to_json(&both)).unwrap(), both);
        let base = r#""name": "a", "provider": "exec", "params": {"command": "x""#;
        for (check, field, says) in [
            (r#"{"http": "x", "tcp": "h:1"}"#, "check", "exactly one"),
            (r#"{}"#, "check", "exactly one"),
            (r#"{"http": "https://h/"}"#, "check.http", "https"),
            (r#"{"tcp": "nope"}"#, "check.tcp", "host:port"),
            (
                r#"{"tcp": "h:1", "interval": "soon"}"#,
                "check.interval",
                "bad duration",
            ),
            (
                r#"{"tcp": "h:1", "failures": 0}"#,
                "check.failures",
                "at least 1",
            ),
            (
                r#"{"tcp": "h:1", "retries": 1}"#,
                "-",
                "unknown field `retries`",
            ),
        ] {
            let err = parse_specs(&format!("{{{base}}}, \"check\": {check}}}")).unwrap_err();
            assert_eq!(err.field, field, "{check}: {err}");
            assert!(err.message.contains(says), "{check}: {err}");
        }
    }

    #[test]
    fn update_policies_parse_round_trip_and_name_the_field_at_fault() {
        let web = &parse_specs(
            r#"{"name": "web", "provider": "exec", "params": {"command": "x"},
                "update": {"max_parallel": 2, "min_healthy_time": "1s", "auto_revert": true}}"#,
        )
        .unwrap()[0];
        assert_eq!(web.update.max_parallel, 2);
        assert_eq!(web.update.min_healthy_time, Duration::from_secs(1));
        assert_eq!(
            web.update.healthy_deadline,
            crate::update::DEFAULT_HEALTHY_DEADLINE
        );
        assert!(web.update.auto_revert);
        let both = [web.clone()];
        assert_eq!(parse_specs(&to_toml(&both).unwrap()).unwrap(), both);
        assert_eq!(parse_specs(&to_json(&both)).unwrap(), both);
        let base = r#""name": "a", "provider": "exec", "params": {"command": "x""#;
        for (update, field, says) in [
            (
                r#"{"max_parallel": -1}"#,
                "update.max_parallel",
                "out of range",
            ),
            (
                r#"{"min_healthy_time": "soon"}"#,
                "update.min_healthy_time",
                "bad duration",
            ),
            (
                r#"{"min_healthy_time": "10s", "healthy_deadline": "5s"}"#,
                "update.healthy_deadline",
                "longer than min_healthy_time",
            ),
            (r#"{"canaries": 1}"#, "-", "unknown field `canaries`"),
        ] {
            let err = parse_specs(&format!("{{{base}}}, \"update\": {update}}}")).unwrap_err();
            assert_eq!(err.field, field, "{update}: {err}");
            assert!(err.message.contains(says), "{update}: {err}");
        }
    }

    #[test]
    fn ports_and_variables_parse_round_trip_and_name_the_field_at_fault() {
        let toml = r#"
name = "web"
provider = "docker"
ports = { http = 0, admin = 9100, api = { to = 8080 }, metrics = { port = 9200, to = 80 } }
env = { LISTEN = "${MOB_ADDR_HTTP}", LITERAL = "$${NOT_A_VAR}" }
[params]
image = "mob-test/busybox"
args = ["httpd", "-f", "-p", "${MOB_PORT_HTTP}"]
[check]
tcp = "127.0.0.1:${MOB_PORT_HTTP}"
"#;
        let web = &parse_specs(toml).unwrap()[0];
        let port = |host, to| crate::ports::PortSpec { host, to };
        assert_eq!(web.ports["http"], port(0, None));
        assert_eq!(web.ports["admin"], port(9100, None));
        assert_eq!(web.ports["api"], port(0, Some(8080)));
        assert_eq!(web.ports["metrics"], port(9200, Some(80)));
        let both = [web.clone()];
        assert_eq!(parse_specs(&to_toml(&both).unwrap()).unwrap(), both);
        assert_eq!(parse_specs(&to_json(&both)).unwrap(), both);
        let exec = r#""name": "a", "provider": "exec""#;
        let docker = r#""name": "a", "provider": "docker", "params": {"image": "i"}"#;
        for (base, rest, field, says) in [
            (
                exec,
                r#""ports": {"http": 70000}"#,
                "ports.http",
                "out of range",
            ),
            (
                exec,
                r#""ports": {"http": -1}"#,
                "ports.http",
                "out of range",
            ),
            (
                docker,
                r#""ports": {"http": {"to": 0}}"#,
                "ports.http.to",
                "out of range",
            ),
            (
                exec,
                r#""ports": {"http": {"to": 80}}"#,
                "ports.http",
                "docker",
            ),
            (
                exec,
                r#""ports": {"a": 80, "b": 80}"#,
                "ports.b",
                "also port",
            ),
            (exec, r#""ports": {"Web": 0}"#, "ports", "a-z"),
            (
                exec,
                r#""ports": {"http": {"host": 80}}"#,
                "-",
                "did not match",
            ),
            (
                exec,
                r#""params": {"command": ["x", "${MOB_PORT_WEB}"]}"#,
                "params.command",
                "${MOB_PORT_WEB}",
            ),
            (
                exec,
                r#""env": {"A": "${HOME}"}"#,
                "env.A",
                "unknown variable ${HOME}",
            ),
            (
                exec,
                r#""ports": {"http": 0}, "check": {"tcp": "127.0.0.1:${MOB_PORT_HTTP"}"#,
                "check.tcp",
                "not closed",
            ),
        ] {
            let params = if rest.contains("params") {
                String::new()
            } else if base == exec {
                r#", "params": {"command": "x"}"#.to_owned()
            } else {
                String::new()
            };
            let text = format!("{{{base}{params}, {rest}}}");
            let err = parse_specs(&text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
            assert!(err.message.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn the_service_named_in_errors_is_the_one_at_fault() {
        let e = error(
            r#"[{"name": "ok", "provider": "exec", "params": {"command": "x"}}, {"name": "bad", "provider": "exec", "params": {}}]"#,
        );
        assert_eq!(e.service, "bad");
        let e = error(
            r#"[{"name": "ok", "provider": "exec", "params": {"command": "x"}}, {"provider": "exec"}]"#,
        );
        assert_eq!(e.service, "#2");
    }
}
