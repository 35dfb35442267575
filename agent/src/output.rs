//! Human and JSON renderings of control responses.

use mob_membership::MemberView;
use serde_json::json;

use crate::control::protocol::StatsReport;

/// `members --json`: `[{"name","addr","epoch","state"}]`.
pub(crate) fn members_json(members: &[MemberView]) -> String {
    let rows: Vec<_> = members
        .iter()
        .map(|m| {
            json!({
                "name": m.id.name,
                "addr": m.id.addr.to_string(),
                "epoch": m.id.epoch,
                "state": m.state.as_str(),
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// `members`: an aligned table.
pub(crate) fn members_table(members: &[MemberView]) -> String {
    let rows: Vec<[String; 4]> = members
        .iter()
        .map(|m| {
            [
                m.id.name.clone(),
                m.id.addr.to_string(),
                m.id.epoch.to_string(),
                m.state.to_string(),
            ]
        })
        .collect();
    table(["NAME", "ADDR", "EPOCH", "STATE"], &rows)
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
    })
    .to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use mob_membership::{MemberState, NodeId};

    fn view(name: &str, state: MemberState) -> MemberView {
        MemberView {
            id: NodeId {
                name: name.into(),
                addr: "10.0.0.1:7946".parse().unwrap(),
                epoch: 7,
            },
            state,
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let out = members_json(&[view("a", MemberState::Alive), view("b", MemberState::Left)]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"name": "a", "addr": "10.0.0.1:7946", "epoch": 7, "state": "alive"},
                {"name": "b", "addr": "10.0.0.1:7946", "epoch": 7, "state": "left"},
            ])
        );
    }

    #[test]
    fn table_columns_align() {
        let out = members_table(&[
            view("a-long-name", MemberState::Alive),
            view("b", MemberState::Down),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("ADDR").unwrap();
        assert_eq!(lines[1].find("10.0.0.1").unwrap(), col);
        assert_eq!(lines[2].find("10.0.0.1").unwrap(), col);
    }
}
