//! `/metrics`: the agent's counters and gauges in the Prometheus text
//! format, encoded by `prometheus-client` from a registry built at each
//! scrape (the counters live where they are counted; a scrape copies
//! them).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use mob_membership::{MemberState, Rejected};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::control::server::ControlState;

/// Label pairs of one series.
type Labels = Vec<(&'static str, String)>;

/// What a scrape reads from the node core, in one read.
pub(crate) struct TableFacts {
    /// This node's instances by state.
    pub(crate) instances: BTreeMap<&'static str, i64>,
    /// Restarts of this node's instances, summed.
    pub(crate) restarts: u64,
    /// Slots this node holds.
    pub(crate) slots: i64,
    /// Live services.
    pub(crate) services: i64,
    /// Full and partial reconcile passes.
    pub(crate) passes: (u64, u64),
}

/// Builds the registry and encodes it.
pub(crate) fn render(state: &ControlState, facts: &TableFacts) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("mob");
    let counter = |r: &mut Registry, name: &str, help: &str, value: u64| {
        let c: Counter = Counter::default();
        c.inc_by(value);
        r.register(name, help, c);
    };
    let gauge = |r: &mut Registry, name: &str, help: &str, value: i64| {
        let g: Gauge = Gauge::default();
        g.set(value);
        r.register(name, help, g);
    };

    // Membership.
    let members = state.membership.members();
    let by_state: Family<Labels, Gauge> = Family::default();
    for s in [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Down,
        MemberState::Left,
    ] {
        let n = members.iter().filter(|m| m.state == s).count();
        by_state
            .get_or_create(&vec![("state", state_label(s).to_owned())])
            .set(n as i64);
    }
    r.register("members", "Members by state, this node included", by_state);
    let events = state.events.counts();
    let member_changes: Family<Labels, Counter> = Family::default();
    for (kind, n) in events.iter().filter(|(k, _)| k.starts_with("member.")) {
        member_changes
            .get_or_create(&vec![("to", kind.trim_start_matches("member.").to_owned())])
            .inc_by(*n);
    }
    r.register(
        "membership_changes",
        "Changes of other members' state seen by this node, by new state",
        member_changes,
    );

    // Gossip and streams.
    let m = state.membership.stats();
    counter(
        &mut r,
        "datagrams_sent",
        "UDP datagrams sent",
        m.datagrams_sent,
    );
    counter(
        &mut r,
        "datagrams_received",
        "UDP datagrams received",
        m.datagrams_received,
    );
    counter(&mut r, "gossip_sent_bytes", "UDP bytes sent", m.bytes_sent);
    counter(
        &mut r,
        "gossip_received_bytes",
        "UDP bytes received",
        m.bytes_received,
    );
    counter(
        &mut r,
        "stream_sent_bytes",
        "Sealed stream bytes sent",
        m.stream_bytes_sent,
    );
    counter(
        &mut r,
        "stream_received_bytes",
        "Sealed stream bytes received",
        m.stream_bytes_received,
    );
    let rejected: Family<Labels, Counter> = Family::default();
    for (why, n) in Rejected::ALL.iter().zip(m.rejected_by) {
        rejected
            .get_or_create(&vec![("reason", why.as_str().to_owned())])
            .inc_by(n);
    }
    r.register(
        "packets_rejected",
        "Datagrams and stream frames rejected, by reason",
        rejected,
    );
    counter(
        &mut r,
        "connections_refused",
        "TCP connections refused (too many, or no hello in time)",
        m.connections_refused,
    );

    // The table.
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let t = &state.table.stats;
    gauge(
        &mut r,
        "table_records",
        "Records in the table, tombstones included",
        get(&t.records) as i64,
    );
    let file = std::fs::metadata(state.data_dir.join(crate::replication::store::TABLE_FILE))
        .map_or(0, |m| m.len());
    gauge(
        &mut r,
        "table_file_bytes",
        "Size of the saved table file",
        file as i64,
    );
    counter(
        &mut r,
        "anti_entropy_rounds",
        "Anti-entropy rounds this node began that completed",
        get(&t.anti_entropy_rounds),
    );
    counter(
        &mut r,
        "anti_entropy_failures",
        "Anti-entropy rounds this node began that failed",
        get(&t.anti_entropy_failures),
    );
    counter(
        &mut r,
        "deltas_received",
        "Broadcast deltas received",
        get(&t.deltas_received),
    );
    counter(
        &mut r,
        "table_saves",
        "Saves of the table file",
        get(&t.saves),
    );
    counter(
        &mut r,
        "table_save_failures",
        "Saves of the table file that failed",
        get(&t.save_failures),
    );
    counter(
        &mut r,
        "records_rejected",
        "Records from peers dropped as malformed",
        get(&t.records_rejected),
    );
    gauge(&mut r, "services", "Live services", facts.services);
    let (full, partial) = facts.passes;
    let passes: Family<Labels, Counter> = Family::default();
    passes
        .get_or_create(&vec![("scope", "full".into())])
        .inc_by(full);
    passes
        .get_or_create(&vec![("scope", "touched".into())])
        .inc_by(partial);
    r.register("reconcile_passes", "Reconcile passes", passes);

    // Instances and slots.
    let instances: Family<Labels, Gauge> = Family::default();
    for (s, n) in &facts.instances {
        instances
            .get_or_create(&vec![("state", (*s).to_owned())])
            .set(*n);
    }
    r.register("instances", "This node's instances by state", instances);
    counter(
        &mut r,
        "instance_restarts",
        "Restarts of this node's current instances",
        facts.restarts,
    );
    gauge(&mut r, "slots", "Slots this node holds", facts.slots);
    let slot_events: Family<Labels, Counter> = Family::default();
    for (kind, n) in events.iter().filter(|(k, _)| k.starts_with("slot.")) {
        slot_events
            .get_or_create(&vec![(
                "event",
                kind.trim_start_matches("slot.").to_owned(),
            )])
            .inc_by(*n);
    }
    r.register(
        "slot_changes",
        "Claims, moves, handovers, releases and losses of slots by this node",
        slot_events,
    );

    // Control requests and DNS.
    let requests: Family<Labels, Counter> = Family::default();
    for ((kind, result), n) in state.requests.snapshot() {
        requests
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc_by(n);
    }
    r.register(
        "control_requests",
        "Control requests, by kind and result",
        requests,
    );
    counter(
        &mut r,
        "dns_queries",
        "DNS queries answered",
        get(&state.dns.queries),
    );
    counter(
        &mut r,
        "dns_malformed",
        "DNS packets dropped as malformed",
        get(&state.dns.malformed),
    );
    gauge(
        &mut r,
        "uptime_seconds",
        "Seconds since the agent started",
        state.started.elapsed().as_secs() as i64,
    );

    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}

fn state_label(s: MemberState) -> &'static str {
    match s {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
        MemberState::Left => "left",
    }
}
