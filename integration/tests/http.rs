//! The HTTP API, metrics, events and the status page, on real agents:
//! `/metrics` parsed by a Prometheus parser, the event stream over the
//! control socket and as server-sent events, the bearer token, SIGHUP,
//! and the page in a real headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::*;

/// GETs `path` from the agent's API: (status, body).
fn get(agent: &Agent, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let http = agent.http.ok_or_else(|| anyhow::anyhow!("no http api"))?;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build();
    let client: ureq::Agent = config.into();
    let mut request = client.get(format!("http://{http}{path}"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call()?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

/// The agent's metrics, parsed.
fn scrape(agent: &Agent) -> anyhow::Result<prometheus_parse::Scrape> {
    let (status, body) = get(agent, "/metrics", None)?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    Ok(prometheus_parse::Scrape::parse(lines)?)
}

/// The value of the series `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn metric(agent: &Agent, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    value(&scrape(agent)?, name, labels).ok_or_else(|| anyhow::anyhow!("no {name} {labels:?}"))
}

#[test]
fn metrics_change_on_join_leave_deploy_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 3).unwrap();
    let first = scrape(&agents[0]).unwrap();
    assert_eq!(
        value(&first, "mob_members", &[("state", "alive")]),
        Some(3.0)
    );
    for name in [
        "mob_datagrams_sent_total",
        "mob_gossip_received_bytes_total",
        "mob_anti_entropy_rounds_total",
        "mob_table_records",
        "mob_table_saves_total",
        "mob_table_save_failures_total",
        "mob_dns_queries_total",
    ] {
        assert!(value(&first, name, &[]).is_some(), "{name} missing");
    }
    assert!(
        value(
            &first,
            "mob_packets_rejected_total",
            &[("reason", "unopened")]
        )
        .is_some()
    );

    // A join.
    let key = dir.path().join("cluster.key");
    let mut spec = AgentSpec::local("n4", dir.path(), &key);
    spec.join.push(agents[0].addr);
    agents.push(Agent::start(spec).unwrap());
    wait_until("4 alive in the metrics", Duration::from_secs(20), || {
        let s = scrape(&agents[0])?;
        Ok(value(&s, "mob_members", &[("state", "alive")]) == Some(4.0)
            && value(&s, "mob_membership_changes_total", &[("to", "up")]) >= Some(3.0))
    })
    .unwrap();

    // A deploy.
    let m = marker(1);
    agents[0].deploy(&sleeper("metered", 1, &m)).unwrap();
    let running = wait_running(&agents, "metered", 1, &m, Duration::from_secs(20));
    let (_, owner, pid) = running[0].clone();
    let owner = agents.iter().position(|a| a.name() == owner).unwrap();
    let s = scrape(&agents[0]).unwrap();
    assert_eq!(value(&s, "mob_services", &[]), Some(1.0));
    assert!(
        value(
            &s,
            "mob_control_requests_total",
            &[("kind", "deploy"), ("result", "ok")]
        ) >= Some(1.0)
    );
    wait_until(
        "the owner's metrics to show its slot",
        Duration::from_secs(10),
        || {
            let s = scrape(&agents[owner])?;
            Ok(value(&s, "mob_slots", &[]) == Some(1.0)
                && value(&s, "mob_instances", &[("state", "running")]) == Some(1.0)
                && value(&s, "mob_slot_changes_total", &[("event", "claimed")]) >= Some(1.0))
        },
    )
    .unwrap();
    assert_eq!(
        metric(&agents[owner], "mob_instance_restarts_total", &[]).unwrap(),
        0.0
    );

    // A restart by policy.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("a restart in the metrics", Duration::from_secs(10), || {
        Ok(metric(&agents[owner], "mob_instance_restarts_total", &[])? >= 1.0)
    })
    .unwrap();

    // A leave.
    let leaver = if owner == 3 { 2 } else { 3 };
    agents[leaver].terminate().unwrap();
    wait_until(
        "a member left in the metrics",
        Duration::from_secs(10),
        || {
            let s = scrape(&agents[0])?;
            Ok(value(&s, "mob_members", &[("state", "left")]) == Some(1.0)
                && value(&s, "mob_membership_changes_total", &[("to", "left")]) == Some(1.0))
        },
    )
    .unwrap();
}

/// Events, as JSON objects, from a stream read on a thread.
struct EventReader {
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl EventReader {
    fn new<R: std::io::Read + Send + 'static>(reader: R, sse: bool) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                let json = if sse {
                    match line.strip_prefix("data:") {
                        Some(data) => data.trim().to_owned(),
                        None => continue,
                    }
                } else {
                    line
                };
                if let Ok(v) = serde_json::from_str::<Value>(&json)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Reads what arrived.
    fn drain(&mut self) -> &[Value] {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }

    /// The first event seen matching `kind` and `about`.
    fn find(&mut self, kind: &str, about: &[(&str, &str)]) -> Option<Value> {
        self.drain()
            .iter()
            .find(|e| e["kind"] == kind && about.iter().all(|(k, v)| e[*k] == *v))
            .cloned()
    }
}

/// `mob-agent events --json` against `agent`.
fn events_cli(agent: &Agent) -> (Child, EventReader) {
    let mut child = Command::new(mob_integration::binary())
        .args(["events", "--json", "--agent"])
        .arg(&agent.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, EventReader::new(stdout, false))
}

/// `/v1/events` of `agent`, as server-sent events.
fn events_sse(agent: &Agent) -> EventReader {
    let http = agent.http.unwrap();
    let client: ureq::Agent = ureq::Agent::config_builder().build().into();
    let response = client
        .get(format!("http://{http}/v1/events"))
        .call()
        .unwrap();
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"))
    );
    EventReader::new(response.into_body().into_reader(), true)
}

/// Three agents with a one-slot service `name` running: the agents and
/// the index of the one that runs it.
fn cluster_running(dir: &std::path::Path, name: &str, k: u32) -> (Vec<Agent>, usize) {
    let agents = local_cluster(dir, 3).unwrap();
    let m = marker(k);
    agents[0].deploy(&sleeper(name, 1, &m)).unwrap();
    let running = wait_running(&agents, name, 1, &m, Duration::from_secs(20));
    let owner = agents
        .iter()
        .position(|a| a.name() == running[0].1)
        .unwrap();
    (agents, owner)
}

#[test]
fn a_join_a_kill_and_the_move_are_events_over_the_socket_and_sse() {
    let dir = tempfile::tempdir().unwrap();
    let (mut agents, owner) = cluster_running(dir.path(), "evented", 2);
    let victim = agents[owner].name().to_owned();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != owner).collect();

    let mut children = Vec::new();
    let mut cli: Vec<(usize, EventReader)> = Vec::new();
    for &i in &survivors {
        let (child, reader) = events_cli(&agents[i]);
        children.push(child);
        cli.push((i, reader));
    }
    let mut sse = events_sse(&agents[survivors[0]]);
    // The recent events come first: the deploy, on the agent it was made on.
    wait_until(
        "the deploy among the recent events",
        Duration::from_secs(10),
        || {
            Ok(sse
                .find("service.deployed", &[("service", "evented")])
                .is_some()
                || cli.iter_mut().any(|(_, r)| {
                    r.find("service.deployed", &[("service", "evented")])
                        .is_some()
                }))
        },
    )
    .unwrap();

    // A join.
    let key = dir.path().join("cluster.key");
    let mut spec = AgentSpec::local("n4", dir.path(), &key);
    spec.join.push(agents[survivors[0]].addr);
    agents.push(Agent::start(spec).unwrap());
    wait_until(
        "member.up n4 on every stream",
        Duration::from_secs(20),
        || {
            Ok(sse.find("member.up", &[("peer", "n4")]).is_some()
                && cli
                    .iter_mut()
                    .all(|(_, r)| r.find("member.up", &[("peer", "n4")]).is_some()))
        },
    )
    .unwrap();

    // A kill -9 of the owner, and the move.
    agents[owner].kill9().unwrap();
    let mut mover = None;
    wait_until(
        "member.down and slot.moved",
        Duration::from_secs(30),
        || {
            let down = sse.find("member.down", &[("peer", &victim)]).is_some()
                && cli
                    .iter_mut()
                    .all(|(_, r)| r.find("member.down", &[("peer", &victim)]).is_some());
            mover = cli.iter_mut().find_map(|(i, r)| {
                r.find("slot.moved", &[("service", "evented"), ("peer", &victim)])
                    .map(|e| (*i, e))
            });
            Ok(down && mover.is_some())
        },
    )
    .unwrap();
    let (i, moved) = mover.unwrap();
    let reader = &mut cli.iter_mut().find(|(j, _)| *j == i).unwrap().1;
    wait_until(
        "the moved instance running",
        Duration::from_secs(20),
        || {
            Ok(reader.drain().iter().any(|e| {
                e["kind"] == "instance.running"
                    && e["service"] == "evented"
                    && e["seq"].as_u64() > moved["seq"].as_u64()
            }))
        },
    )
    .unwrap();
    // The shape: every field, always.
    for field in [
        "seq", "time_ms", "node", "kind", "peer", "service", "slot", "version", "detail",
    ] {
        assert!(moved.get(field).is_some(), "{field} missing from {moved}");
    }
    assert_eq!(moved["node"], agents[i].name());
    assert_eq!(moved["slot"], 0);
    // Seq numbers only go up on a stream.
    let seqs: Vec<u64> = reader
        .drain()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn the_api_needs_its_token_and_a_taken_explicit_port_stops_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();

    // Off loopback with no token: refused at start, exit 2, naming the fix.
    let out = Command::new(mob_integration::binary())
        .args([
            "run",
            "--bind",
            "127.0.0.1:0",
            "--dns",
            "off",
            "--http",
            "0.0.0.0:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("open"))
        .arg("--key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--http-token"), "{stderr}");

    // An explicit port that is taken: exit 2, naming it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(mob_integration::binary())
        .args(["run", "--bind", "127.0.0.1:0", "--dns", "off"])
        .args(["--http", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("taken"))
        .arg("--key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("http 127.0.0.1:{port}")),
        "{stderr}"
    );

    // With a token: every route needs it, as a header or in the query.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let mut spec = AgentSpec::local("n1", dir.path(), &key);
    spec.extra = vec!["--http-token".into(), token_file.display().to_string()];
    let agent = Agent::start(spec).unwrap();
    for path in ["/v1/members", "/v1/services", "/metrics", "/", "/v1/health"] {
        let (status, _) = get(&agent, path, None).unwrap();
        assert_eq!(status, 401, "{path} without the token");
        let (status, _) = get(&agent, path, Some("wrong")).unwrap();
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    wait_until("health 200 with the token", Duration::from_secs(10), || {
        Ok(get(&agent, "/v1/health", Some("s3cret-token"))?.0 == 200)
    })
    .unwrap();
    let (status, body) = get(&agent, "/v1/members?token=s3cret-token", None).unwrap();
    assert_eq!(status, 200);
    let members: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(members[0]["name"], "n1");
    let (status, _) = get(&agent, "/v1/services/nothing", Some("s3cret-token")).unwrap();
    assert_eq!(status, 404);
}

#[test]
fn sighup_changes_the_log_level_and_leaves_the_agent_and_its_instances_running() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();
    let config = dir.path().join("mob.toml");
    std::fs::write(&config, "log_level = \"info\"\n").unwrap();
    let mut spec = AgentSpec::local("n1", dir.path(), &key);
    spec.extra = vec!["--config".into(), config.display().to_string()];
    let agent = Agent::start(spec).unwrap();
    // A peer: anti-entropy rounds with it are debug lines.
    let mut spec = AgentSpec::local("n2", dir.path(), &key);
    spec.join.push(agent.addr);
    let _peer = Agent::start(spec).unwrap();
    let m = marker(3);
    agent.deploy(&sleeper("steady", 1, &m)).unwrap();
    let before = wait_running(
        std::slice::from_ref(&agent),
        "steady",
        1,
        &m,
        Duration::from_secs(20),
    );
    let debug_lines = |agent: &Agent| {
        agent
            .log()
            .lines()
            .filter(|l| l.contains("\"level\":\"DEBUG\""))
            .count()
    };
    assert_eq!(debug_lines(&agent), 0);

    std::fs::write(&config, "log_level = \"debug\"\n").unwrap();
    let pid = nix::unistd::Pid::from_raw(agent.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_until("the reload line", Duration::from_secs(10), || {
        Ok(agent
            .log_events("SIGHUP: config reloaded")
            .iter()
            .any(|e| e["log_level"] == "debug"))
    })
    .unwrap();
    // Debug lines come (anti-entropy rounds with the peer).
    wait_until("debug lines in the log", Duration::from_secs(15), || {
        Ok(debug_lines(&agent) > 0)
    })
    .unwrap();
    // Still running, the same instance.
    assert!(nix::sys::signal::kill(pid, None).is_ok(), "the agent died");
    assert_eq!(processes_with_arg(&m), vec![before[0].2]);
    assert!(agent.cli(&["members"]).unwrap().contains("n1"));
}

/// Headless Chromium, if installed (CI installs it: there it must be).
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    mob_integration::requirement::met(
        found.is_some(),
        "MOB_REQUIRE_CHROMIUM",
        "chromium is not installed (apt-get install chromium)",
    )
    .then_some(found?)
}

/// The page's DOM after its scripts ran, as Chromium renders it.
fn rendered(browser: &str, url: &str, screenshot: Option<&std::path::Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    // (Bounded: a page that never settles must fail the test, not hang it.)
    let mut command = Command::new("timeout");
    command
        .args(["30", browser])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=4000", "--window-size=1200,900"]);
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let out = command.arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows of a table of the rendered page, as cell texts.
fn rows(dom: &str, table: &str) -> Vec<Vec<String>> {
    let Some(start) = dom.find(&format!("id=\"{table}\"")) else {
        return Vec::new();
    };
    let rest = &dom[start..];
    let body = &rest[..rest.find("</table>").unwrap_or(rest.len())];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let text = &cell[cell.find('>').map_or(0, |i| i + 1)..];
                    text[..text.find("</td>").unwrap_or(text.len())].to_owned()
                })
                .collect()
        })
        .filter(|cells: &Vec<String>| !cells.is_empty())
        .collect()
}

#[test]
fn the_status_page_shows_members_services_and_the_move_in_headless_chromium() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut agents, owner) = cluster_running(dir.path(), "paged", 4);
    let first_owner = agents[owner].name().to_owned();
    let watcher = (0..3).find(|i| *i != owner).unwrap();
    let url = format!("http://{}/", agents[watcher].http.unwrap());

    let mut dom = String::new();
    wait_until(
        "the page to list the members and the service",
        Duration::from_secs(30),
        || {
            dom = rendered(browser, &url, None);
            let members = rows(&dom, "members");
            let services = rows(&dom, "services");
            Ok(members.len() == 3
                && ["n1", "n2", "n3"]
                    .iter()
                    .all(|n| members.iter().any(|r| r[0] == *n && r[1] == "alive"))
                && services
                    .iter()
                    .any(|r| r[0] == "paged" && r[2] == first_owner && r[3] == "running"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {dom}"));
    let shot = dir.path().join("status-page.png");
    rendered(browser, &url, Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "no screenshot");
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());

    // A kill -9 of the owner: the page shows the slot on another node,
    // and the events.
    let victim = agents[owner].name().to_owned();
    agents[owner].kill9().unwrap();
    wait_until("the page to show the move", Duration::from_secs(40), || {
        dom = rendered(browser, &url, None);
        let services = rows(&dom, "services");
        let members = rows(&dom, "members");
        Ok(services
            .iter()
            .any(|r| r[0] == "paged" && r[2] != victim && r[3] == "running")
            && members.iter().any(|r| r[0] == victim && r[1] == "down"))
    })
    .unwrap_or_else(|e| panic!("{e}: {dom}"));
    let events = rows(&dom, "events");
    assert!(
        events
            .iter()
            .any(|r| r.get(2).is_some_and(|k| k == "member.down")),
        "no member.down among {events:?}"
    );
}
