//! Human and JSON renderings of control responses.

use crate::control::protocol::MemberReport;
use mob_scheduler::history::History;
use mob_scheduler::services_view::{ServiceView, SlotView};
use mob_scheduler::spec_file;
use serde_json::json;

use crate::control::protocol::StatsReport;
use crate::events::EventLine;
use crate::wall_clock::now_ms;
use mob_scheduler::node::keyring::KeyView;
use mob_scheduler::node::{DeployKind, Deployed};

/// `members --json`: `[{"name","addr","epoch","state","state_since_ms","slots","clock_offset_ms",...}]`.
pub(crate) fn members_json(members: &[MemberReport]) -> String {
    let rows: Vec<_> = members
        .iter()
        .map(|r| {
            let m = &r.member;
            json!({
                "name": m.id.name,
                "addr": m.id.addr.to_string(),
                "epoch": m.id.epoch,
                "state": m.state.as_str(),
                "state_since_ms": m.since_ms,
                "slots": r.slots,
                "clock_offset_ms": r.clock_offset_ms,
                "tags": r.record.as_ref().map(|n| &n.tags),
                "providers": r.record.as_ref().map(|n| n.providers.iter().map(|p| p.as_str()).collect::<Vec<_>>()),
                "draining": r.record.as_ref().is_some_and(|n| n.draining),
                "leaving": r.record.as_ref().is_some_and(|n| n.leaving),
                "version": r.record.as_ref().map(|n| &n.version),
                "started_at_ms": r.record.as_ref().map(|n| n.started_at_ms),
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// `members`: an aligned table; `detail` adds how long each member has
/// been in its state, its clock offset, providers, tags and version.
pub(crate) fn members_table(members: &[MemberReport], detail: bool) -> String {
    let now = now_ms();
    let rows: Vec<[String; 10]> = members
        .iter()
        .map(|r| {
            let m = &r.member;
            let record = r.record.as_ref();
            let state = match record {
                Some(n) if n.leaving => format!("{} (leaving)", m.state),
                Some(n) if n.draining => format!("{} (draining)", m.state),
                _ => m.state.to_string(),
            };
            let providers = record.map_or_else(
                || "-".to_owned(),
                |n| {
                    n.providers
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                },
            );
            let tags = record
                .map(|n| {
                    n.tags
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "-".to_owned());
            [
                m.id.name.clone(),
                m.id.addr.to_string(),
                // Up since its state's epoch (a restart is a new one): an
                // age, as `services` shows SINCE. `--json` has the ms.
                age(
                    Some(record.map_or(m.id.epoch, |n| n.started_at_ms.max(m.id.epoch))),
                    now,
                ),
                state,
                r.slots.to_string(),
                age(Some(m.since_ms), now),
                r.clock_offset_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:+}ms")),
                providers,
                tags,
                record.map_or_else(|| "-".to_owned(), |n| n.version.clone()),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "ADDR",
        "UP",
        "STATE",
        "SLOTS",
        "FOR",
        "CLOCK",
        "PROVIDERS",
        "TAGS",
        "VERSION",
    ];
    if detail {
        return table(header, &rows);
    }
    let brief: Vec<[String; 5]> = rows
        .into_iter()
        .map(|[name, addr, up, state, slots, ..]| [name, addr, up, state, slots])
        .collect();
    let [name, addr, up, state, slots, ..] = header;
    table([name, addr, up, state, slots], &brief)
}

/// `keys list`: one row per key; NODES counts the live members that
/// hold it.
pub(crate) fn keys_table(members: &[String], keys: &[KeyView]) -> String {
    let rows: Vec<[String; 4]> = keys
        .iter()
        .map(|k| {
            let state = match (k.primary, k.held) {
                (true, _) => "primary",
                (false, true) => "accepted",
                (false, false) => "not held here",
            };
            let sealing = if k.sealing.is_empty() {
                "-".to_owned()
            } else {
                k.sealing.join(",")
            };
            [
                k.fingerprint.clone(),
                state.to_owned(),
                format!("{}/{}", k.nodes.len(), members.len()),
                sealing,
            ]
        })
        .collect();
    table(["KEY", "HERE", "NODES", "SEALING"], &rows)
}

/// `keys list --json`.
pub(crate) fn keys_json(keys: &[KeyView]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            json!({
                "fingerprint": k.fingerprint,
                "primary": k.primary,
                "held": k.held,
                "nodes": k.nodes,
                "sealing": k.sealing,
            })
        })
        .collect();
    serde_json::Value::Array(keys).to_string()
}

/// `stats --json`.
pub(crate) fn stats_json(stats: &StatsReport) -> String {
    let m = &stats.membership;
    json!({
        "node": stats.node,
        "uptime_secs": stats.uptime_secs,
        "packets_rejected": m.packets_rejected,
        "datagrams_sent": m.datagrams_sent,
        "datagrams_received": m.datagrams_received,
        "bytes_sent": m.bytes_sent,
        "bytes_received": m.bytes_received,
        "dropped_notices": m.dropped_notices,
        "stream_bytes_sent": m.stream_bytes_sent,
        "stream_bytes_received": m.stream_bytes_received,
        "connections_refused": m.connections_refused,
        "table_records": stats.table_records,
        "deltas_rejected": stats.deltas_rejected,
        "anti_entropy_rounds": stats.anti_entropy_rounds,
        "anti_entropy_failures": stats.anti_entropy_failures,
        "deltas_received": stats.deltas_received,
        "records_rejected": stats.records_rejected,
        "table_forgotten": stats.table_forgotten,
        "table_save_failures": stats.table_save_failures,
        "dns_queries": stats.dns_queries,
        "dns_malformed": stats.dns_malformed,
    })
    .to_string()
}

/// `deploy`: one line per service.
pub(crate) fn deployed(outcomes: &[Deployed]) -> String {
    outcomes
        .iter()
        .map(|d| {
            let verb = match d.kind {
                DeployKind::Created => "deployed",
                DeployKind::Updated => "updated",
                DeployKind::Unchanged => "unchanged",
            };
            format!("{verb} {} version {}\n", d.name, d.version)
        })
        .collect()
}

/// `deploy --json`: per service, its name, version and what happened.
pub(crate) fn deployed_json(outcomes: &[Deployed]) -> String {
    let rows: Vec<_> = outcomes
        .iter()
        .map(|d| {
            let outcome = match d.kind {
                DeployKind::Created => "deployed",
                DeployKind::Updated => "updated",
                DeployKind::Unchanged => "unchanged",
            };
            json!({ "name": d.name, "version": d.version, "outcome": outcome })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

fn slot_json(slot: &SlotView) -> serde_json::Value {
    json!({
        "slot": slot.slot,
        "node": slot.node,
        "state": slot.state.as_str(),
        "pid": slot.pid,
        "restarts": slot.restarts,
        "since_ms": slot.since_ms,
        "reason": slot.reason,
        "health": slot.health,
        "last_exit": slot.last_exit,
        "last_signal": slot.last_signal,
        "version": slot.version,
        "addr": slot.addr,
        "ports": slot.ports,
    })
}

/// `resolve --json`: `[{"slot","node","ip","port","addr"}]`.
pub(crate) fn endpoints_json(endpoints: &[mob_scheduler::discovery::Endpoint]) -> String {
    let rows: Vec<_> = endpoints
        .iter()
        .map(|e| {
            json!({
                "slot": e.slot,
                "node": e.node,
                "ip": e.ip,
                "port": e.port,
                "addr": e.addr(),
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// `replicas` as a spec writes it: a count, or `"every-node"`.
fn replicas_json(s: &ServiceView) -> serde_json::Value {
    if s.every_node {
        json!("every-node")
    } else {
        json!(s.replicas)
    }
}

/// `services --json`: `[{"name","provider","replicas","partition","slots":[{"slot","node","state","pid","restarts","since_ms","reason"}]}]`.
pub(crate) fn services_json(services: &[ServiceView]) -> String {
    let rows: Vec<_> = services
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "provider": s.provider.as_str(),
                "replicas": replicas_json(s),
                "partition": s.spec.partition.as_str(),
                "stopped": s.spec.stopped,
                "version": s.version,
                "slots": s.slots.iter().map(slot_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// How long ago `since_ms` was, shortly: `42s`, `3m12s`, `2h5m`, `3d4h`.
fn age(since_ms: Option<u64>, now_ms: u64) -> String {
    let Some(since) = since_ms else {
        return "-".to_owned();
    };
    let secs = now_ms.saturating_sub(since) / 1000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

const SLOT_COLUMNS: [&str; 9] = [
    "NAME", "PROVIDER", "SLOT", "NODE", "STATE", "HEALTH", "PID", "RESTARTS", "SINCE",
];

fn slot_rows<'a>(
    name: &'a str,
    provider: &'a str,
    slots: &'a [SlotView],
    now_ms: u64,
) -> impl Iterator<Item = [String; 9]> + 'a {
    slots.iter().map(move |slot| {
        [
            name.to_owned(),
            provider.to_owned(),
            slot.slot.to_string(),
            dash(slot.node.as_ref()),
            slot.state.as_str().to_owned(),
            dash(slot.health.as_ref()),
            dash(slot.pid),
            slot.restarts.to_string(),
            age(slot.since_ms, now_ms),
        ]
    })
}

/// `services`: one row per slot (a service with 0 replicas gets one row).
pub(crate) fn services_table(services: &[ServiceView]) -> String {
    let mut rows = Vec::new();
    for s in services {
        if s.slots.is_empty() {
            let dashes = || "-".to_owned();
            rows.push([
                s.name.clone(),
                s.provider.as_str().to_owned(),
                dashes(),
                dashes(),
                if s.spec.stopped {
                    "stopped"
                } else {
                    "scaled to 0"
                }
                .into(),
                dashes(),
                dashes(),
                dashes(),
                dashes(),
            ]);
        }
        rows.extend(slot_rows(&s.name, s.provider.as_str(), &s.slots, now_ms()));
    }
    table(SLOT_COLUMNS, &rows)
}

/// `status NAME --json`.
pub(crate) fn status_json(s: &ServiceView) -> String {
    json!({
        "name": s.name,
        "provider": s.provider.as_str(),
        "replicas": replicas_json(s),
        "partition": s.spec.partition.as_str(),
        "version": s.version,
        "origin": s.origin,
        "restart": s.spec.restart.as_str(),
        "depends_on": s.spec.depends_on,
        "constraints": { "tags": s.spec.constraints.tags },
        "slots": s.slots.iter().map(slot_json).collect::<Vec<_>>(),
    })
    .to_string()
}

/// `status NAME`.
pub(crate) fn status_text(s: &ServiceView) -> String {
    let spec = &s.spec;
    let mut out = format!(
        "name:       {}\nprovider:   {}\nversion:    {} (written by {})\nreplicas:   {}\npartition:  {}\nrestart:    {} (max {} in {:?})\n",
        s.name,
        s.provider,
        s.version,
        s.origin,
        if s.every_node {
            "every-node".to_owned()
        } else {
            s.replicas.to_string()
        },
        spec.partition.as_str(),
        spec.restart.as_str(),
        spec.max_restarts,
        spec.restart_window,
    );
    if !spec.depends_on.is_empty() {
        out.push_str(&format!("depends_on: {}\n", spec.depends_on.join(", ")));
    }
    if !spec.constraints.tags.is_empty() {
        let tags: Vec<String> = spec
            .constraints
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("tags:       {}\n", tags.join(", ")));
    }
    out.push('\n');
    let rows: Vec<[String; 9]> =
        slot_rows(&s.name, s.provider.as_str(), &s.slots, now_ms()).collect();
    out.push_str(&table(SLOT_COLUMNS, &rows));
    for slot in s.slots.iter().filter(|slot| slot.addr.is_some()) {
        let ports: Vec<String> = slot.ports.iter().map(|(n, p)| format!("{n}={p}")).collect();
        let at = match (&slot.node, s.every_node) {
            (Some(node), true) => format!("on {node}"),
            _ => format!("slot {}", slot.slot),
        };
        match (slot.addr, ports.is_empty()) {
            (Some(ip), false) => out.push_str(&format!("{at}: {ip}, ports {}\n", ports.join(" "))),
            (Some(ip), true) => out.push_str(&format!("{at}: {ip}\n")),
            (None, _) => {}
        }
    }
    for slot in &s.slots {
        if let Some(reason) = &slot.reason {
            match (&slot.node, s.every_node) {
                (Some(node), true) => out.push_str(&format!("on {node}: {reason}\n")),
                _ => out.push_str(&format!("slot {}: {reason}\n", slot.slot)),
            }
        }
    }
    out
}

/// `history NAME --json`: oldest first.
pub(crate) fn history_json(history: &History) -> String {
    let rows: Vec<_> = history
        .versions
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "written_ms": v.written_ms,
                "origin": v.origin,
                "cause": v.cause.describe(),
                "outcome": v.outcome.as_str(),
                "spec": v.spec.as_ref().map(spec_file::to_json_value),
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// `history NAME`: one row per kept version, oldest first.
pub(crate) fn history_table(history: &History) -> String {
    let now = now_ms();
    let rows: Vec<[String; 5]> = history
        .versions
        .iter()
        .map(|v| {
            [
                v.version.to_string(),
                format!("{} ago", age(Some(v.written_ms), now)),
                v.origin.clone(),
                v.cause.describe(),
                v.outcome.as_str().to_owned(),
            ]
        })
        .collect();
    table(["VERSION", "WRITTEN", "ORIGIN", "CAUSE", "OUTCOME"], &rows)
}

/// `stats`: one `key value` line each.
pub(crate) fn stats_text(stats: &StatsReport) -> String {
    let m = &stats.membership;
    let rows = [
        ["node".to_owned(), stats.node.clone()],
        ["uptime_secs".into(), format!("{:.1}", stats.uptime_secs)],
        ["packets_rejected".into(), m.packets_rejected.to_string()],
        ["datagrams_sent".into(), m.datagrams_sent.to_string()],
        [
            "datagrams_received".into(),
            m.datagrams_received.to_string(),
        ],
        ["bytes_sent".into(), m.bytes_sent.to_string()],
        ["bytes_received".into(), m.bytes_received.to_string()],
        ["dropped_notices".into(), m.dropped_notices.to_string()],
        ["stream_bytes_sent".into(), m.stream_bytes_sent.to_string()],
        [
            "stream_bytes_received".into(),
            m.stream_bytes_received.to_string(),
        ],
        [
            "connections_refused".into(),
            m.connections_refused.to_string(),
        ],
        ["table_records".into(), stats.table_records.to_string()],
        ["deltas_rejected".into(), stats.deltas_rejected.to_string()],
        [
            "anti_entropy_rounds".into(),
            stats.anti_entropy_rounds.to_string(),
        ],
        [
            "anti_entropy_failures".into(),
            stats.anti_entropy_failures.to_string(),
        ],
        ["deltas_received".into(), stats.deltas_received.to_string()],
        [
            "records_rejected".into(),
            stats.records_rejected.to_string(),
        ],
        ["table_forgotten".into(), stats.table_forgotten.to_string()],
        [
            "table_save_failures".into(),
            stats.table_save_failures.to_string(),
        ],
    ];
    table(["COUNTER", "VALUE"], &rows)
}

/// Left-aligned columns separated by two spaces.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// An event as `events --json` prints it: one object per line.
pub(crate) fn event_json(line: &EventLine) -> String {
    serde_json::to_string(line).unwrap_or_default()
}

/// An event as `events` prints it: time, node, kind, then what it is
/// about.
pub(crate) fn event_text(line: &EventLine) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(line.time_ms);
    let mut out = format!(
        "{} {} {}",
        humantime::format_rfc3339_millis(time),
        line.node,
        line.kind
    );
    match (&line.service, line.slot) {
        (Some(service), Some(slot)) => out.push_str(&format!(" {service}/{slot}")),
        (Some(service), None) => out.push_str(&format!(" {service}")),
        _ => {}
    }
    if let Some(version) = line.version {
        out.push_str(&format!(" version={version}"));
    }
    if let Some(peer) = &line.peer {
        out.push_str(&format!(" peer={peer}"));
    }
    if let Some(detail) = &line.detail {
        out.push_str(&format!(" ({detail})"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mob_membership::{MemberState, MemberView, NodeId};

    fn view(name: &str, state: MemberState) -> MemberReport {
        MemberReport {
            member: MemberView {
                id: NodeId {
                    name: name.into(),
                    addr: "10.0.0.1:7946".parse().unwrap(),
                    epoch: 7,
                },
                state,
                since_ms: 0,
            },
            slots: name.len(),
            clock_offset_ms: (state == MemberState::Alive).then_some(-12),
            record: (state == MemberState::Alive).then(|| mob_scheduler::record::NodeRecord {
                addr: "10.0.0.1:7946".into(),
                providers: vec![mob_scheduler::spec::ProviderKind::Exec],
                tags: [("zone".to_owned(), "a".to_owned())].into(),
                draining: true,
                drain_started_ms: 1,
                leaving: false,
                version: "0.1.0".into(),
                started_at_ms: 5,
                keys: Vec::new(),
            }),
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let out = members_json(&[view("a", MemberState::Alive), view("b", MemberState::Left)]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"name": "a", "addr": "10.0.0.1:7946", "epoch": 7, "state": "alive", "state_since_ms": 0, "slots": 1, "clock_offset_ms": -12,
                 "tags": {"zone": "a"}, "providers": ["exec"], "draining": true, "leaving": false, "version": "0.1.0", "started_at_ms": 5},
                {"name": "b", "addr": "10.0.0.1:7946", "epoch": 7, "state": "left", "state_since_ms": 0, "slots": 1, "clock_offset_ms": null,
                 "tags": null, "providers": null, "draining": false, "leaving": false, "version": null, "started_at_ms": null},
            ])
        );
        let table = members_table(&[view("a", MemberState::Alive)], true);
        assert!(
            table.contains("alive (draining)")
                && table.contains("zone=a")
                && table.contains("exec")
                && table.contains("FOR"),
            "{table}"
        );
        let brief = members_table(&[view("a", MemberState::Alive)], false);
        assert!(brief.contains("alive (draining)"), "{brief}");
        assert!(
            !brief.contains("zone=a") && !brief.contains("FOR"),
            "{brief}"
        );
    }

    #[test]
    fn ages_are_short() {
        let now = 10 * 86_400_000;
        assert_eq!(age(None, now), "-");
        assert_eq!(age(Some(now - 42_000), now), "42s");
        assert_eq!(age(Some(now - 192_000), now), "3m12s");
        assert_eq!(age(Some(now - 7_500_000), now), "2h5m");
        assert_eq!(age(Some(now - 3 * 86_400_000 - 4 * 3_600_000), now), "3d4h");
        assert_eq!(
            age(Some(now + 5_000), now),
            "0s",
            "a clock ahead is not negative"
        );
    }

    #[test]
    fn table_columns_align() {
        let out = members_table(
            &[
                view("a-long-name", MemberState::Alive),
                view("b", MemberState::Down),
            ],
            true,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("ADDR").unwrap();
        assert_eq!(lines[1].find("10.0.0.1").unwrap(), col);
        assert_eq!(lines[2].find("10.0.0.1").unwrap(), col);
    }
}
