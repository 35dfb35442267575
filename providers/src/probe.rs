//! One probe of a health check ([`mob_scheduler::check`]): an HTTP GET, a
//! TCP connect, or a command, each bounded by the check's timeout. What
//! the results mean is [`mob_scheduler::check::Health`]'s to decide.

use std::process::Stdio;
use std::time::Duration;

use mob_scheduler::check::{Check, Probe};
use mob_scheduler::spec::{Params, ProviderKind};
use tokio::process::Command;

use crate::docker::container_name;
use crate::provider::InstanceSpec;

/// Runs one probe of `check` against `instance`: `Ok` if it passed, else
/// why not (shown in the agent's log).
pub async fn probe(check: &Check, instance: &InstanceSpec) -> Result<(), String> {
    let timeout = check.timeout;
    let run = async {
        match &check.probe {
            Probe::Http(url) => http(url.clone(), timeout).await,
            Probe::Tcp(addr) => tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map(drop)
                .map_err(|e| format!("connect to {addr}: {e}")),
            Probe::Command(argv) => command(argv, instance).await,
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            let what = match &check.probe {
                Probe::Http(url) => format!("GET {url}"),
                Probe::Tcp(addr) => format!("connect to {addr}"),
                Probe::Command(argv) => format!("{:?}", argv.join(" ")),
            };
            Err(format!(
                "{what}: no answer within {} ms",
                timeout.as_millis()
            ))
        })
}

/// A GET of `url`: a 2xx or 3xx status passes (redirects are not
/// followed: the answer itself counts).
async fn http(url: String, timeout: Duration) -> Result<(), String> {
    let get = move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        match agent.get(&url).call() {
            Ok(response) if matches!(response.status().as_u16(), 200..=399) => Ok(()),
            Ok(response) => Err(format!("GET {url}: status {}", response.status())),
            Err(e) => Err(format!("GET {url}: {e}")),
        }
    };
    tokio::task::spawn_blocking(get)
        .await
        .unwrap_or_else(|e| Err(format!("probe task failed: {e}")))
}

/// Runs `argv` beside the instance (inside its container for docker):
/// exit status 0 passes. Killed if the probe times out.
async fn command(argv: &[String], instance: &InstanceSpec) -> Result<(), String> {
    let mut command = if instance.spec.params.provider() == ProviderKind::Docker {
        let mut c = Command::new("docker");
        c.arg("exec").arg(container_name(instance)).args(argv);
        c
    } else {
        let (program, args) = argv.split_first().ok_or("the command is empty")?;
        let mut c = Command::new(program);
        crate::exec::set_instance_env(&mut c, instance, None);
        c.args(args);
        if let Params::Exec { cwd: Some(cwd), .. } | Params::Shell { cwd: Some(cwd), .. } =
            &instance.spec.params
        {
            c.current_dir(cwd);
        }
        c
    };
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("cannot run {:?}: {e}", argv.first()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} exited with {status}", argv.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use mob_scheduler::spec_file::parse_specs;

    fn instance() -> InstanceSpec {
        InstanceSpec {
            node: "n1".into(),
            agent: "test".into(),
            slot: 0,
            spec: parse_specs(r#"{"name": "web", "provider": "exec", "params": {"command": "x"}}"#)
                .unwrap()
                .remove(0),
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            ports: Default::default(),
        }
    }

    fn check(probe: Probe) -> Check {
        Check {
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            grace: Duration::ZERO,
            failures: 1,
        }
    }

    /// Answers one HTTP request with `status`, on a thread.
    fn serve_once(status: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        format!("http://{addr}/health")
    }

    #[tokio::test]
    async fn http_passes_on_2xx_and_3xx_and_fails_otherwise() {
        for (status, passes) in [
            ("200 OK", true),
            ("302 Found", true),
            ("404 Not Found", false),
            ("503 Service Unavailable", false),
        ] {
            let url = serve_once(status);
            let result = probe(&check(Probe::Http(url)), &instance()).await;
            assert_eq!(result.is_ok(), passes, "{status}: {result:?}");
        }
    }

    #[tokio::test]
    async fn http_that_never_answers_fails_at_the_timeout() {
        // Accepts, reads, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let started = std::time::Instant::now();
        let result = probe(&check(Probe::Http(url)), &instance()).await;
        assert!(result.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        drop(listener);
    }

    #[tokio::test]
    async fn tcp_passes_while_something_listens() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert!(
            probe(&check(Probe::Tcp(addr.clone())), &instance())
                .await
                .is_ok()
        );
        drop(listener);
        let err = probe(&check(Probe::Tcp(addr.clone())), &instance())
            .await
            .unwrap_err();
        assert!(err.contains(&addr), "{err}");
    }

    #[tokio::test]
    async fn a_command_passes_on_exit_0_and_fails_at_the_timeout() {
        let ok = probe(&check(Probe::Command(vec!["true".into()])), &instance()).await;
        assert!(ok.is_ok(), "{ok:?}");
        let failed = probe(&check(Probe::Command(vec!["false".into()])), &instance()).await;
        assert!(failed.is_err());
        // It sees the instance's environment.
        let env = probe(
            &check(Probe::Command(vec![
                "sh".into(),
                "-c".into(),
                "test \"$MOB_SERVICE/$MOB_SLOT\" = web/0".into(),
            ])),
            &instance(),
        )
        .await;
        assert!(env.is_ok(), "{env:?}");
        let started = std::time::Instant::now();
        let slow = probe(
            &check(Probe::Command(vec!["sleep".into(), "30".into()])),
            &instance(),
        )
        .await;
        assert!(slow.is_err_and(|e| e.contains("no answer within 500 ms")));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
