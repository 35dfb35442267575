//! Where a service can be reached: the address and port of each of its
//! instances that serves (up, and passing its check if it has one). What
//! `mob-agent resolve` prints and DNS answers, from the local table.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::placement::Members;
use crate::record::InstanceState;
use crate::services_view::ServiceView;
use crate::spec::EVERY_NODE_SLOT;
use crate::table::Table;

/// One instance that serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its slot.
    pub slot: u32,
    /// The node it runs on.
    pub node: String,
    /// The IP that node advertises.
    pub ip: IpAddr,
    /// The chosen port's host port; `None` for a service without ports.
    pub port: Option<u16>,
}

impl Endpoint {
    /// `ip:port`, or the IP alone without a port.
    pub fn addr(&self) -> String {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).to_string(),
            None => self.ip.to_string(),
        }
    }
}

/// An instance that serves, as the table has it: on a live owner that
/// reports it running (up, and passing its check if it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its slot.
    pub slot: u32,
    /// The node it runs on.
    pub node: String,
    /// The IP that node advertises.
    pub ip: IpAddr,
    /// Its host ports by name.
    pub ports: BTreeMap<String, u16>,
}

/// The instances of the live service `name` that serve, in slot (or, for
/// an every-node service, node) order; `None` if there is no such live
/// service. Reads only the service's own records, so a lookup costs its
/// slots, not the table.
pub fn serving(table: &Table, members: &Members, name: &str) -> Option<Vec<Instance>> {
    let (spec, _) = table.live_service(name)?;
    let instance = |node: &str, slot: u32| -> Option<Instance> {
        if !members.is_live(node) {
            return None;
        }
        let status = table.status(node, name, slot)?;
        (status.state == InstanceState::Running).then_some(())?;
        Some(Instance {
            slot,
            node: node.to_owned(),
            ip: status.ip?,
            ports: status.ports.clone(),
        })
    };
    Some(if spec.stopped {
        Vec::new()
    } else if spec.every_node {
        table
            .nodes()
            .filter_map(|(node, _)| instance(node, EVERY_NODE_SLOT))
            .collect()
    } else {
        (0..spec.live_replicas())
            .filter_map(|slot| {
                let owner = table.claim(name, slot)?.owner.clone()?;
                instance(&owner, slot)
            })
            .collect()
    })
}

/// The IP the live member `node` advertises, from its node record.
pub fn node_ip(table: &Table, members: &Members, node: &str) -> Option<IpAddr> {
    if !members.is_live(node) {
        return None;
    }
    table
        .node(node)?
        .addr
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip())
}

/// Why a service can't be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The port asked for is not one of the service's.
    #[error("service {service} has no port {port:?} (its ports: {known})")]
    NoSuchPort {
        /// The service.
        service: String,
        /// The port asked for.
        port: String,
        /// Its ports, comma-separated.
        known: String,
    },
    /// It has several ports and none was asked for.
    #[error("service {service} has several ports ({known}): name one with --port")]
    WhichPort {
        /// The service.
        service: String,
        /// Its ports, comma-separated.
        known: String,
    },
}

/// The instances of `service` that serve, with port `port` (which may be
/// left out when the service has at most one), in slot order.
pub fn endpoints(service: &ServiceView, port: Option<&str>) -> Result<Vec<Endpoint>, ResolveError> {
    let known = || {
        service
            .spec
            .ports
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    let port = match port {
        Some(p) if service.spec.ports.contains_key(p) => Some(p.to_owned()),
        Some(p) => {
            return Err(ResolveError::NoSuchPort {
                service: service.name.clone(),
                port: p.to_owned(),
                known: known(),
            });
        }
        None if service.spec.ports.len() > 1 => {
            return Err(ResolveError::WhichPort {
                service: service.name.clone(),
                known: known(),
            });
        }
        None => service.spec.ports.keys().next().cloned(),
    };
    Ok(service
        .slots
        .iter()
        .filter(|slot| slot.serves())
        .filter_map(|slot| {
            let port = match &port {
                Some(name) => Some(*slot.ports.get(name)?),
                None => None,
            };
            Some(Endpoint {
                slot: slot.slot,
                node: slot.node.clone()?,
                ip: slot.addr?,
                port,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services_view::SlotView;
    use crate::spec_file::parse_specs;

    fn view(ports: &str, slots: Vec<SlotView>) -> ServiceView {
        let spec = parse_specs(&format!(
            r#"{{"name":"web","provider":"exec","ports":{ports},"params":{{"command":"x"}}}}"#
        ))
        .unwrap()
        .remove(0);
        ServiceView {
            name: "web".into(),
            provider: spec.params.provider(),
            replicas: 1,
            every_node: false,
            version: 1,
            origin: "n1".into(),
            spec,
            slots,
        }
    }

    fn slot(slot: u32, state: InstanceState, ports: &[(&str, u16)]) -> SlotView {
        SlotView {
            slot,
            node: Some(format!("n{slot}")),
            state,
            pid: Some(1),
            restarts: 0,
            since_ms: None,
            reason: None,
            version: Some(1),
            health: None,
            last_exit: None,
            last_signal: None,
            addr: Some(IpAddr::from([10, 0, 0, slot as u8])),
            ports: ports.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect(),
        }
    }

    #[test]
    fn only_serving_instances_with_the_port_asked_for() {
        let web = view(
            r#"{"http":0,"admin":9100}"#,
            vec![
                slot(
                    0,
                    InstanceState::Running,
                    &[("http", 20001), ("admin", 9100)],
                ),
                slot(
                    1,
                    InstanceState::Starting,
                    &[("http", 20002), ("admin", 9100)],
                ),
                slot(
                    2,
                    InstanceState::Running,
                    &[("http", 20003), ("admin", 9100)],
                ),
            ],
        );
        let http = endpoints(&web, Some("http")).unwrap();
        let addrs: Vec<String> = http.iter().map(Endpoint::addr).collect();
        assert_eq!(addrs, ["10.0.0.0:20001", "10.0.0.2:20003"]);
        assert!(matches!(
            endpoints(&web, None),
            Err(ResolveError::WhichPort { .. })
        ));
        let err = endpoints(&web, Some("grpc")).unwrap_err();
        assert!(err.to_string().contains("admin, http"), "{err}");
    }

    #[test]
    fn one_port_or_none_needs_no_name() {
        let web = view(
            r#"{"http":0}"#,
            vec![slot(0, InstanceState::Running, &[("http", 20001)])],
        );
        assert_eq!(endpoints(&web, None).unwrap()[0].addr(), "10.0.0.0:20001");
        let bare = view("{}", vec![slot(0, InstanceState::Running, &[])]);
        assert_eq!(endpoints(&bare, None).unwrap()[0].addr(), "10.0.0.0");
    }
}
