//! The answer to one DNS query, from the local table: the zone `mob.`.
//!
//! - `<service>.service.mob` A/AAAA: one per node with an instance that
//!   serves;
//! - `_<port>._tcp.<service>.service.mob` SRV: one per instance, target
//!   `<node>.node.mob` and the instance's host port (the targets' A/AAAA
//!   records come as additional records);
//! - `<slot>.<service>.service.mob` A/AAAA: that slot's instance;
//! - `<node>.node.mob` A/AAAA: a live member's advertised IP.
//!
//! Another zone is REFUSED; an unknown name in `mob.` is NXDOMAIN; a
//! known name without records of the type asked is an empty NOERROR.
//! Messages are encoded and decoded by `hickory-proto`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use mob_scheduler::Table;
use mob_scheduler::discovery::{Instance, node_ip, serving};
use mob_scheduler::placement::Members;

/// The zone this agent is authoritative for.
pub(crate) const ZONE: &str = "mob.";

/// The largest UDP answer without EDNS (RFC 1035).
const PLAIN_UDP: u16 = 512;

/// What a query name means.
#[derive(Debug, PartialEq, Eq)]
enum Asked<'a> {
    /// The zone itself, or `service.mob`, `node.mob`: they exist, with
    /// no records.
    Empty,
    Service(&'a str),
    Port {
        port: &'a str,
        service: &'a str,
    },
    Node(&'a str),
    Unknown,
}

/// Reads `name` (lowercase, fully qualified, in `mob.`): `None` when it
/// is in another zone.
fn parse(name: &str) -> Option<Asked<'_>> {
    if name == ZONE {
        return Some(Asked::Empty);
    }
    let rest = name.strip_suffix(".mob.")?;
    if rest == "service" || rest == "node" {
        return Some(Asked::Empty);
    }
    if let Some(node) = rest.strip_suffix(".node") {
        return Some(Asked::Node(node));
    }
    let Some(service) = rest.strip_suffix(".service") else {
        return Some(Asked::Unknown);
    };
    if let Some(port) = service.strip_prefix('_') {
        return Some(match port.split_once("._tcp.") {
            Some((port, service)) => Asked::Port { port, service },
            None => Asked::Unknown,
        });
    }
    Some(Asked::Service(service))
}

/// Builds the answer to `request` (already decoded) from `table` with
/// `members` live, for a client that came over UDP or not.
pub(crate) fn answer(
    request: &Message,
    table: &Table,
    members: &Members,
    ttl: u32,
    udp: bool,
) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(false);
    let limit = match request.extensions() {
        Some(edns) => {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().max(PLAIN_UDP));
            response.set_edns(ours);
            edns.max_payload().max(PLAIN_UDP)
        }
        None => PLAIN_UDP,
    };
    if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
        response.set_response_code(ResponseCode::NotImp);
        return response;
    }
    let Some(query) = request.queries().first().cloned() else {
        response.set_response_code(ResponseCode::FormErr);
        return response;
    };
    response.add_query(query.clone());
    let name = query.name().to_lowercase().to_ascii();
    let asked = match parse(&name) {
        Some(asked) if query.query_class() == DNSClass::IN => asked,
        _ => {
            response.set_response_code(ResponseCode::Refused);
            return response;
        }
    };
    match records(&asked, &query, table, members, ttl) {
        None => {
            response.set_response_code(ResponseCode::NXDomain);
        }
        Some((answers, additionals)) => {
            response.set_response_code(ResponseCode::NoError);
            response.add_answers(answers);
            response.add_additionals(additionals);
        }
    }
    // Too big for the client's datagram: truncated, it asks again by TCP.
    if udp
        && response
            .to_vec()
            .map_or(true, |bytes| bytes.len() > usize::from(limit))
    {
        response.take_answers();
        response.take_additionals();
        response.set_truncated(true);
    }
    response
}

/// The answer and additional records of `asked`; `None`: no such name.
fn records(
    asked: &Asked<'_>,
    query: &Query,
    table: &Table,
    members: &Members,
    ttl: u32,
) -> Option<(Vec<Record>, Vec<Record>)> {
    let name = query.name().clone();
    let wants = |t: RecordType| query.query_type() == t || query.query_type() == RecordType::ANY;
    // Every name but an SRV one answers with addresses.
    let ips: BTreeSet<IpAddr> = match asked {
        Asked::Empty => BTreeSet::new(),
        Asked::Unknown => return None,
        Asked::Node(node) => BTreeSet::from([node_ip(table, members, node)?]),
        Asked::Service(service) => match serving(table, members, service) {
            Some(instances) => instances.iter().map(|i| i.ip).collect(),
            // `<slot>.<service>`: a service's name may hold dots, so the
            // whole name is tried first.
            None => {
                let (slot, service) = service.split_once('.')?;
                let slot: u32 = slot.parse().ok()?;
                let instances = serving(table, members, service)?;
                instances
                    .iter()
                    .filter(|i| i.slot == slot)
                    .map(|i| i.ip)
                    .collect()
            }
        },
        Asked::Port { port, service } => {
            let spec = table.live_service(service)?.0;
            if !spec.ports.contains_key(*port) {
                return None;
            }
            let instances = serving(table, members, service)?;
            if !wants(RecordType::SRV) {
                return Some((Vec::new(), Vec::new()));
            }
            return Some(srv(&name, &instances, port, ttl));
        }
    };
    let answers = ips
        .into_iter()
        .filter_map(|ip| address(&name, ip, ttl, &wants))
        .collect();
    Some((answers, Vec::new()))
}

/// The SRV records of `instances` for `port`, and their targets' address
/// records.
fn srv(name: &Name, instances: &[Instance], port: &str, ttl: u32) -> (Vec<Record>, Vec<Record>) {
    let mut answers = Vec::new();
    let mut targets = BTreeSet::new();
    for instance in instances {
        let Some(host_port) = instance.ports.get(port) else {
            continue;
        };
        let Ok(target) = Name::from_ascii(format!("{}.node.{ZONE}", instance.node)) else {
            continue;
        };
        answers.push(Record::from_rdata(
            name.clone(),
            ttl,
            RData::SRV(SRV::new(1, 1, *host_port, target.clone())),
        ));
        targets.insert((target, instance.ip));
    }
    let additionals = targets
        .into_iter()
        .filter_map(|(target, ip)| address(&target, ip, ttl, &|_| true))
        .collect();
    (answers, additionals)
}

/// An A or AAAA record of `ip`, if the query wants its type.
fn address(
    name: &Name,
    ip: IpAddr,
    ttl: u32,
    wants: &dyn Fn(RecordType) -> bool,
) -> Option<Record> {
    match ip {
        IpAddr::V4(v4) if wants(RecordType::A) => {
            Some(Record::from_rdata(name.clone(), ttl, RData::A(A(v4))))
        }
        IpAddr::V6(v6) if wants(RecordType::AAAA) => {
            Some(Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6))))
        }
        _ => None,
    }
}

/// A table with one service `web` of two slots, running on n1 and n2,
/// port `http`: for the tests and the fuzz target.
pub(crate) fn example_table() -> (Table, Members) {
    use mob_scheduler::Key;
    use mob_scheduler::record::{
        Claim, InstanceState, NodeRecord, Record, ServiceRecord, Status, Value,
    };
    let spec = mob_scheduler::spec_file::parse_specs(
        r#"{"name":"web","provider":"exec","replicas":2,"ports":{"http":0},"params":{"command":"x"}}"#,
    )
    .ok()
    .and_then(|mut specs| specs.pop());
    let mut clock = mob_scheduler::Clock::new("n1");
    let mut table = Table::new();
    let mut put = |key: Key, value: Value| {
        table.apply(
            key,
            Record {
                ts: clock.tick(1),
                value,
            },
        );
    };
    put(
        Key::Service("web".into()),
        Value::Service(ServiceRecord {
            version: 1,
            instance_since: 1,
            spec,
        }),
    );
    for (i, node) in ["n1", "n2"].into_iter().enumerate() {
        put(
            Key::Node(node.into()),
            Value::Node(NodeRecord {
                addr: format!("10.0.0.{}:7946", i + 1),
                providers: Vec::new(),
                tags: Default::default(),
                draining: false,
                drain_started_ms: 0,
                leaving: false,
                version: String::new(),
                started_at_ms: 0,
                keys: Vec::new(),
            }),
        );
        let slot = i as u32;
        put(
            Key::Claim("web".into(), slot),
            Value::Claim(Claim {
                owner: Some(node.into()),
                failed_on: Vec::new(),
                version: 1,
            }),
        );
        put(
            Key::Status(node.into(), "web".into(), slot),
            Value::Status(Status {
                state: InstanceState::Running,
                pid: Some(1),
                restarts: 0,
                since_ms: 1,
                last_exit: None,
                last_signal: None,
                last_error: None,
                version: 1,
                started_ms: 1,
                proven: true,
                ip: Some(IpAddr::from([10, 0, 0, i as u8 + 1])),
                ports: [("http".to_owned(), 20_000 + slot as u16)].into(),
            }),
        );
    }
    (table, Members::new(["n1".to_owned(), "n2".to_owned()]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ask(name: &str, kind: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(7)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        m
    }

    #[test]
    fn answers_come_from_the_table() {
        let (table, members) = example_table();
        let a = answer(
            &ask("web.service.mob.", RecordType::A),
            &table,
            &members,
            0,
            true,
        );
        assert_eq!(a.response_code(), ResponseCode::NoError);
        assert_eq!(a.answers().len(), 2);
        assert!(a.authoritative());
        let srv = answer(
            &ask("_http._tcp.web.service.mob.", RecordType::SRV),
            &table,
            &members,
            5,
            true,
        );
        let ports: BTreeSet<u16> = srv
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(s) => Some(s.port()),
                _ => None,
            })
            .collect();
        assert_eq!(ports, BTreeSet::from([20_000, 20_001]));
        assert_eq!(srv.additionals().len(), 2, "the targets' A records");
        assert!(srv.answers().iter().all(|r| r.ttl() == 5));
        let one = answer(
            &ask("1.web.service.mob.", RecordType::A),
            &table,
            &members,
            0,
            true,
        );
        assert_eq!(one.answers().len(), 1);
        let node = answer(
            &ask("n2.node.mob.", RecordType::A),
            &table,
            &members,
            0,
            true,
        );
        assert_eq!(node.answers().len(), 1);
        let none = answer(
            &ask("web.service.mob.", RecordType::AAAA),
            &table,
            &members,
            0,
            true,
        );
        assert_eq!(
            (none.response_code(), none.answers().len()),
            (ResponseCode::NoError, 0)
        );
        let unknown = answer(
            &ask("api.service.mob.", RecordType::A),
            &table,
            &members,
            0,
            true,
        );
        assert_eq!(unknown.response_code(), ResponseCode::NXDomain);
        let other = answer(
            &ask("example.com.", RecordType::A),
            &table,
            &members,
            0,
            true,
        );
        assert_eq!(other.response_code(), ResponseCode::Refused);
        // n2 down: its instance is no longer given out.
        let members = Members::new(["n1".to_owned()]);
        let a = answer(
            &ask("web.service.mob.", RecordType::A),
            &table,
            &members,
            0,
            true,
        );
        assert_eq!(a.answers().len(), 1);
    }

    proptest! {
        /// Whatever arrives, decoding and answering never panic, and an
        /// answer always encodes.
        #[test]
        fn any_bytes_are_refused_or_answered(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let (table, members) = example_table();
            if let Ok(request) = Message::from_vec(&bytes) {
                let response = answer(&request, &table, &members, 0, true);
                prop_assert!(response.to_vec().is_ok());
            }
        }

        /// Real queries cut short or with bytes flipped, likewise.
        #[test]
        fn damaged_queries_are_refused_or_answered(cut in 0usize..80, flip in 0usize..80, bit in 0u8..8) {
            let (table, members) = example_table();
            let mut bytes = ask("_http._tcp.web.service.mob.", RecordType::SRV).to_vec().unwrap();
            if let Some(b) = bytes.get_mut(flip) {
                *b ^= 1 << bit;
            }
            bytes.truncate(cut);
            if let Ok(request) = Message::from_vec(&bytes) {
                let response = answer(&request, &table, &members, 0, true);
                prop_assert!(response.to_vec().is_ok());
            }
        }
    }

    #[test]
    fn names_are_read_by_their_shape() {
        assert_eq!(parse("web.service.mob."), Some(Asked::Service("web")));
        assert_eq!(
            parse("_http._tcp.web.service.mob."),
            Some(Asked::Port {
                port: "http",
                service: "web"
            })
        );
        assert_eq!(parse("0.web.service.mob."), Some(Asked::Service("0.web")));
        assert_eq!(parse("n1.node.mob."), Some(Asked::Node("n1")));
        assert_eq!(parse("mob."), Some(Asked::Empty));
        assert_eq!(parse("service.mob."), Some(Asked::Empty));
        assert_eq!(parse("web.other.mob."), Some(Asked::Unknown));
        assert_eq!(parse("_http.web.service.mob."), Some(Asked::Unknown));
        assert_eq!(parse("example.com."), None);
        assert_eq!(parse("mob.example.com."), None);
    }
}
