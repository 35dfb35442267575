//! The process supervisors mob is measured against, each run in a temp
//! dir supervising one program: supervisord (`supervisord -n` with a
//! config of its own, driven by `supervisorctl`) and runit (`runsv` on a
//! service dir, driven by `sv`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::wait_until;

fn on_path(binary: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
        .with_context(|| format!("{binary} is not installed (apt-get install {package})"))
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let out = command.output()?;
    if !out.status.success() {
        bail!(
            "{command:?}: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `supervisord --version`.
pub fn supervisord_version() -> anyhow::Result<String> {
    let version = run(Command::new(on_path("supervisord", "supervisor")?).arg("--version"))?;
    Ok(format!("supervisord {}", version.trim()))
}

/// runit's package version (its binaries print none).
pub fn runit_version() -> anyhow::Result<String> {
    on_path("runsv", "runit")?;
    let version = run(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "runit"]))
        .unwrap_or_else(|_| "unknown version".into());
    Ok(format!("runit {}", version.trim()))
}

/// A supervisord of its own, supervising `program`; stopped on drop.
pub struct Supervisord {
    child: Option<Child>,
    config: PathBuf,
}

impl Supervisord {
    /// Starts supervisord with one program running `command` (started at
    /// once if `autostart`), restarted whenever it exits.
    pub fn start(
        dir: &Path,
        program: &str,
        command: &str,
        autostart: bool,
    ) -> anyhow::Result<Self> {
        let config = dir.join("supervisord.conf");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
                 childlogdir={d}\n\n\
                 [unix_http_server]\nfile={d}/supervisor.sock\n\n\
                 [rpcinterface:supervisor]\n\
                 supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
                 [program:{program}]\ncommand={command}\nautostart={autostart}\nautorestart=true\n\
                 startsecs=0\nstartretries=1000000\nstdout_logfile={d}/{program}.out\n\
                 stderr_logfile={d}/{program}.err\n"
            ),
        )?;
        let child = Command::new(on_path("supervisord", "supervisor")?)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let supervisord = Self {
            child: Some(child),
            config,
        };
        wait_until("supervisord to answer", Duration::from_secs(20), || {
            supervisord.answers()
        })?;
        Ok(supervisord)
    }

    /// Whether supervisord answers `supervisorctl status` (which exits 3
    /// when a program is stopped: still an answer).
    fn answers(&self) -> anyhow::Result<bool> {
        let status = Command::new(on_path("supervisorctl", "supervisor")?)
            .arg("-c")
            .arg(&self.config)
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        Ok(matches!(status.code(), Some(0 | 3)))
    }

    /// `supervisorctl ARGS`.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new(on_path("supervisorctl", "supervisor")?)
            .arg("-c")
            .arg(&self.config)
            .args(args))
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: supervisord stops its programs before it exits.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = child.wait();
        }
    }
}

/// A `runsv` on a service dir of its own; stopped on drop.
pub struct Runsv {
    child: Option<Child>,
    service: PathBuf,
}

impl Runsv {
    /// Starts `runsv` on a service whose `run` is `run_script`; with
    /// `down`, the service starts down (`sv up` starts it).
    pub fn start(dir: &Path, run_script: &str, down: bool) -> anyhow::Result<Self> {
        let service = dir.join("service");
        std::fs::create_dir_all(&service)?;
        let run_path = service.join("run");
        std::fs::write(&run_path, run_script)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run_path, std::fs::Permissions::from_mode(0o755))?;
        if down {
            std::fs::write(service.join("down"), "")?;
        }
        let child = Command::new(on_path("runsv", "runit")?)
            .arg(&service)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let runsv = Self {
            child: Some(child),
            service,
        };
        wait_until("runsv to take its service", Duration::from_secs(10), || {
            Ok(runsv.service.join("supervise/ok").exists())
        })?;
        Ok(runsv)
    }

    /// `sv ARGS SERVICE`.
    pub fn sv(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new(on_path("sv", "runit")?)
            .args(args)
            .arg(&self.service))
    }
}

impl Drop for Runsv {
    fn drop(&mut self) {
        let _ = self.sv(&["force-stop"]);
        let _ = self.sv(&["exit"]);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
