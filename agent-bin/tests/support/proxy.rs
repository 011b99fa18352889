//! A `fullauto-proxy` process for tests, and psql through it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `fullauto-proxy`, killed by PID on drop (its log printed when a test
/// fails).
pub struct ProxyProcess {
    child: Child,
    log: PathBuf,
}

impl ProxyProcess {
    /// Starts the proxy on `config`, logging to `log`.
    pub fn start(config: &Path, log: &Path) -> ProxyProcess {
        let out = std::fs::File::create(log).expect("log");
        let err = out.try_clone().expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_fullauto-proxy"))
            .arg(config)
            .env("PATRONI_LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn fullauto-proxy");
        ProxyProcess {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the proxy's log contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(text))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- fullauto-proxy -----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Runs `q` with psql through `port` (a new connection): its output, or psql's
/// error text.
pub fn via(port: u16, q: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-c", q])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGSSLMODE", "prefer")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The port of the server a new connection through `port` reaches.
pub fn server_port(port: u16) -> Result<u16, String> {
    via(port, "SELECT inet_server_port()")?
        .parse()
        .map_err(|e| format!("{e}"))
}
