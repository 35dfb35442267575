//! Named ports a service asks for: `ports = { http = 0, admin = 9100,
//! web = { to = 8080 } }`.
//!
//! A port 0 is picked by the slot's owner from its port range when the
//! instance starts; a number is that host port. Docker maps the host port
//! to the container port `to` (by default the same number). Instances
//! learn theirs from `MOB_PORT_<NAME>` and `MOB_ADDR_<NAME>` (see
//! [`crate::interpolate`]); status records and DNS carry them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest port name: an SRV service label (RFC 6335 allows 15).
pub const MAX_PORT_NAME_LEN: usize = 15;

/// One named port of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// The host port; 0: the owner picks one from its port range.
    pub host: u16,
    /// The container port a docker instance publishes it as; `None`: the
    /// host port's number.
    pub to: Option<u16>,
}

impl PortSpec {
    /// Whether the owner picks the host port.
    pub fn is_dynamic(&self) -> bool {
        self.host == 0
    }
}

/// Ports by name.
pub type Ports = BTreeMap<String, PortSpec>;

/// Checks a port name: `[a-z][a-z0-9-]*`, at most
/// [`MAX_PORT_NAME_LEN`] characters, not ending in `-` (it becomes the SRV
/// label `_<name>._tcp` and the variable `MOB_PORT_<NAME>`).
pub fn validate_port_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_PORT_NAME_LEN {
        return Err(format!(
            "name {name:?} must be 1 to {MAX_PORT_NAME_LEN} characters"
        ));
    }
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(format!(
            "name {name:?} must be a-z, 0-9 and '-', starting with a letter and not ending in '-'"
        ));
    }
    Ok(())
}

/// The variable that holds the host port of `name`: `MOB_PORT_HTTP` for
/// `http`, `MOB_PORT_ADMIN_API` for `admin-api`.
pub fn port_var(name: &str) -> String {
    format!("MOB_PORT_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// The variable that holds `ip:port` of `name`.
pub fn addr_var(name: &str) -> String {
    format!("MOB_ADDR_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// Checks the ports of a service (relative field names, `ports.<name>`):
/// names, ranges, `to` only for docker, no fixed port twice.
pub fn validate_ports(ports: &Ports, docker: bool) -> Result<(), (String, String)> {
    let mut fixed: BTreeMap<u16, &str> = BTreeMap::new();
    for (name, port) in ports {
        let field = format!("ports.{name}");
        validate_port_name(name).map_err(|m| ("ports".to_owned(), m))?;
        if port.to == Some(0) {
            return Err((field, "to = 0: a container port is 1 to 65535".into()));
        }
        if port.to.is_some() && !docker {
            return Err((
                field,
                "`to` (the container port) is for docker services only".into(),
            ));
        }
        if !port.is_dynamic()
            && let Some(other) = fixed.insert(port.host, name)
        {
            return Err((
                field,
                format!("host port {} is also port {other:?}", port.host),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_variables_and_bad_ones_are_refused() {
        assert_eq!(port_var("http"), "MOB_PORT_HTTP");
        assert_eq!(addr_var("admin-api"), "MOB_ADDR_ADMIN_API");
        for good in ["http", "a", "admin-api", "h2"] {
            assert!(validate_port_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Http",
            "1http",
            "http-",
            "ht_tp",
            "a-very-long-port-name",
        ] {
            assert!(validate_port_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fixed_ports_twice_and_to_outside_docker_are_refused() {
        let port = |host, to| PortSpec { host, to };
        let ports: Ports = [("a".into(), port(80, None)), ("b".into(), port(80, None))].into();
        let (field, message) = validate_ports(&ports, false).unwrap_err();
        assert_eq!(field, "ports.b");
        assert!(message.contains("80"), "{message}");
        let ports: Ports = [("a".into(), port(0, None)), ("b".into(), port(0, None))].into();
        assert!(validate_ports(&ports, false).is_ok());
        let ports: Ports = [("a".into(), port(0, Some(8080)))].into();
        assert_eq!(validate_ports(&ports, false).unwrap_err().0, "ports.a");
        assert!(validate_ports(&ports, true).is_ok());
    }
}
