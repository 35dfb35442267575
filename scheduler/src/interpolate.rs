//! `${…}` in what an instance runs: its `command`, docker `args`, `env`
//! values and check. The names are `MOB_IP`, `MOB_SERVICE`, `MOB_SLOT`,
//! `MOB_NODE`, and `MOB_PORT_<NAME>` and `MOB_ADDR_<NAME>` of each port
//! the service declares ([`crate::ports`]); any other name is an error
//! when the spec is deployed, naming it. `$${` writes a literal `${`; a
//! `$` not followed by `{` stays as it is (a shell's `$HOME`).
//!
//! The slot's owner interpolates when it starts the instance, once its
//! ports are chosen: the table holds the spec as written.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::check::Probe;
use crate::ports::{addr_var, port_var};
use crate::spec::{Params, ServiceSpec};

/// The values of one instance's variables, by name.
pub type Vars = BTreeMap<String, String>;

/// The variables of slot `slot` of `spec` on `node`, which advertises
/// `ip`, with its host `ports` by name.
pub fn vars(
    spec: &ServiceSpec,
    node: &str,
    slot: u32,
    ip: IpAddr,
    ports: &BTreeMap<String, u16>,
) -> Vars {
    let mut vars = Vars::new();
    vars.insert("MOB_IP".into(), ip.to_string());
    vars.insert("MOB_SERVICE".into(), spec.name.clone());
    vars.insert("MOB_SLOT".into(), slot.to_string());
    vars.insert("MOB_NODE".into(), node.to_owned());
    for (name, port) in ports {
        vars.insert(port_var(name), port.to_string());
        vars.insert(
            addr_var(name),
            std::net::SocketAddr::new(ip, *port).to_string(),
        );
    }
    vars
}

/// `text` with each `${NAME}` replaced by its value in `vars`. Errors name
/// what is wrong: an unknown name, or a `${` never closed.
pub fn interpolate(text: &str, vars: &Vars) -> Result<String, String> {
    if !text.contains("${") {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        // `$${` is a literal `${`.
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}').ok_or_else(|| {
            format!("\"${{\" is not closed in {text:?} (write \"$${{\" for a literal \"${{\")")
        })?;
        let name = &after[..end];
        let value = vars.get(name).ok_or_else(|| {
            format!(
                "unknown variable ${{{name}}} (known: {})",
                vars.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every text of `spec` that is interpolated, with its field.
fn texts(spec: &ServiceSpec) -> Vec<(String, &str)> {
    let mut texts: Vec<(String, &str)> = Vec::new();
    match &spec.params {
        Params::Exec { command, .. } => {
            texts.extend(
                command
                    .iter()
                    .map(|c| ("params.command".to_owned(), c.as_str())),
            );
        }
        Params::Shell { command, .. } => texts.push(("params.command".into(), command)),
        Params::Docker { args, .. } => {
            texts.extend(args.iter().map(|a| ("params.args".to_owned(), a.as_str())));
        }
    }
    texts.extend(
        spec.env
            .iter()
            .map(|(k, v)| (format!("env.{k}"), v.as_str())),
    );
    if let Some(check) = &spec.check {
        match &check.probe {
            Probe::Http(url) => texts.push(("check.http".into(), url)),
            Probe::Tcp(addr) => texts.push(("check.tcp".into(), addr)),
            Probe::Command(argv) => {
                texts.extend(
                    argv.iter()
                        .map(|a| ("check.command".to_owned(), a.as_str())),
                );
            }
        }
    }
    texts
}

/// Checks that every `${…}` of `spec` names a variable it has; the error
/// names the field and the variable.
pub fn validate(spec: &ServiceSpec) -> Result<(), (String, String)> {
    // (The names are those of any instance; the values don't matter.)
    let vars = sample_vars(spec);
    for (field, text) in texts(spec) {
        interpolate(text, &vars).map_err(|m| (field, m))?;
    }
    Ok(())
}

/// A value for every variable of `spec`, as an instance could see them:
/// what the rules of the interpolated spec are checked against.
pub fn sample_vars(spec: &ServiceSpec) -> Vars {
    let ports = spec
        .ports
        .iter()
        .map(|(name, p)| (name.clone(), if p.is_dynamic() { 20_000 } else { p.host }))
        .collect();
    vars(spec, "node", 0, IpAddr::from([127, 0, 0, 1]), &ports)
}

impl ServiceSpec {
    /// This spec with `vars` in place of its `${…}`: what the instance
    /// runs.
    pub fn interpolated(&self, vars: &Vars) -> Result<ServiceSpec, String> {
        let one = |t: &String| interpolate(t, vars);
        let many = |l: &Vec<String>| -> Result<Vec<String>, String> {
            l.iter().map(|t| interpolate(t, vars)).collect()
        };
        let mut spec = self.clone();
        match &mut spec.params {
            Params::Exec { command, .. } => *command = many(command)?,
            Params::Shell { command, .. } => *command = one(command)?,
            Params::Docker { args, .. } => *args = many(args)?,
        }
        for value in spec.env.values_mut() {
            *value = one(value)?;
        }
        if let Some(check) = spec.check.as_deref_mut() {
            match &mut check.probe {
                Probe::Http(url) => *url = one(url)?,
                Probe::Tcp(addr) => *addr = one(addr)?,
                Probe::Command(argv) => *argv = many(argv)?,
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars_of(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names_are_replaced_and_escapes_and_shell_dollars_kept() {
        let vars = vars_of(&[("MOB_PORT_HTTP", "20001"), ("MOB_IP", "10.0.0.1")]);
        assert_eq!(
            interpolate("-p ${MOB_PORT_HTTP} on ${MOB_IP}:${MOB_PORT_HTTP}", &vars).unwrap(),
            "-p 20001 on 10.0.0.1:20001"
        );
        assert_eq!(
            interpolate("echo $HOME $${X}", &vars).unwrap(),
            "echo $HOME ${X}"
        );
        assert_eq!(interpolate("no vars", &vars).unwrap(), "no vars");
        let unknown = interpolate("${MOB_PORT_WEB}", &vars).unwrap_err();
        assert!(unknown.contains("${MOB_PORT_WEB}"), "{unknown}");
        let open = interpolate("x ${MOB_IP", &vars).unwrap_err();
        assert!(open.contains("not closed"), "{open}");
    }

    #[test]
    fn addresses_of_v6_nodes_are_bracketed() {
        let spec = crate::spec_file::parse_specs(
            r#"{"name":"a","provider":"exec","ports":{"http":0},"params":{"command":"x"}}"#,
        )
        .unwrap()
        .remove(0);
        let ports = [("http".to_owned(), 20_001)].into();
        let v = vars(&spec, "n1", 2, "::1".parse().unwrap(), &ports);
        assert_eq!(v["MOB_ADDR_HTTP"], "[::1]:20001");
        assert_eq!(v["MOB_PORT_HTTP"], "20001");
        assert_eq!(v["MOB_SLOT"], "2");
        assert_eq!(v["MOB_NODE"], "n1");
    }
}
