//! A tiny WebDriver client (W3C protocol over the harness's HTTP/1.0 client) driving
//! Debian's `chromedriver` and headless `chromium`. Everything started here is
//! stopped by PID on drop, the browser processes included.

use crate::support::{free_port, wait_until};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One WebDriver request: HTTP/1.1 (chromedriver ignores HTTP/1.0), the answer read
/// up to its `Content-Length` (chromedriver keeps the connection open).
fn http(method: &str, port: u16, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(90))).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut payload = vec![0u8; length];
    r.read_exact(&mut payload).ok()?;
    let json = serde_json::from_slice(&payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
    Some((status, json))
}

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one browser session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile; screenshots
    /// go to `shots`.
    pub fn start(shots: &Path) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; scripts/setup installs it)");
        let profile = tempfile::Builder::new()
            .prefix("fullauto-ui-chromium-")
            .tempdir()
            .expect("profile dir");
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
            shots: shots.to_path_buf(),
        };
        let up = wait_until(Duration::from_secs(20), || {
            http("GET", port, "/status", None).filter(|(s, _)| *s == 200)
        });
        assert!(up.is_some(), "chromedriver did not start on port {port}");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1100",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", b._profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let (status, v) = http("POST", port, "/session", Some(&caps)).expect("new session");
        assert_eq!(status, 200, "chromium did not start: {v}");
        b.session = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        std::fs::create_dir_all(shots).expect("screenshot dir");
        b
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("/session/{}{path}", self.session);
        let body = body.unwrap_or_else(|| json!({}));
        let body = (method != "GET").then_some(&body);
        let (status, v) = http(method, self.port, &url, body)
            .unwrap_or_else(|| panic!("webdriver {method} {path}: no answer"));
        assert_eq!(status, 200, "webdriver {method} {path}: {v}");
        v["value"].clone()
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page and returns its result.
    pub fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Polls `script` until it returns something other than `null`/`false`.
    pub fn wait_js(&self, within: Duration, script: &str) -> Option<Value> {
        wait_until(within, || {
            let v = self.js(script);
            (!v.is_null() && v != Value::Bool(false)).then_some(v)
        })
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Clicks the element `css` selects, as a user would.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/click"), None);
    }

    /// Clears the input `css` selects and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/clear"), None);
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Accepts the open `confirm()` dialog; returns its text.
    pub fn accept_dialog(&self) -> String {
        let text = self.cmd("GET", "/alert/text", None);
        self.cmd("POST", "/alert/accept", None);
        text.as_str().unwrap_or_default().to_string()
    }

    /// Resizes the browser window (e.g. to a phone's width).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Saves a PNG of the page as `<shots>/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot data"))
            .expect("screenshot base64");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

/// Every process below `pid`, children before parents' siblings, read from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                "DELETE",
                self.port,
                &format!("/session/{}", self.session),
                None,
            );
        }
        // Chromium's processes hang below chromedriver: stop them by PID first, or
        // they would be re-parented and outlive the test.
        for pid in descendants(self.driver.id()) {
            // SAFETY: signalling processes our chromedriver started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
