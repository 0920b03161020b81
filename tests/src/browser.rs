//! A headless Chromium (Debian's `chromium` package) driven over the DevTools protocol, for
//! tests of the explorer's pages as a browser shows them: navigate, run the page's own
//! JavaScript (clicks, typing, file choice), wait for what it renders, take screenshots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a page may take to load or to show what a test waits for.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// The `chromium` binary: `$CHROMIUM`, else the first of Debian's names on `PATH`.
pub fn find_chromium() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "no chromium on PATH: install Debian's package (`apt-get install chromium`, as \
         scripts/test.sh does) or set CHROMIUM to the browser's path"
    )
}

/// A headless Chromium with one page, killed when dropped.
pub struct Browser {
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    session: String,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens a blank page.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = find_chromium()?;
        let profile = tempfile::tempdir()?;
        let log = std::fs::File::create(profile.path().join("chromium.log"))?;
        let child = tokio::process::Command::new(&bin)
            .args([
                "--headless",
                // The test may run as root, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--window-size=1280,1000",
                // Chromium picks the port and writes it to DevToolsActivePort: no race.
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
                }
            }
            if started.elapsed() > PAGE_TIMEOUT {
                let log = std::fs::read_to_string(profile.path().join("chromium.log"))
                    .unwrap_or_default();
                bail!("chromium did not open its DevTools port: {log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .context("connecting to chromium's DevTools")?;
        let mut browser = Self {
            _child: child,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = target["targetId"]
            .as_str()
            .context("no targetId")?
            .to_owned();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        browser.session = attached["sessionId"]
            .as_str()
            .context("no sessionId")?
            .to_owned();
        Ok(browser)
    }

    /// Sends one DevTools command (to the page once attached) and returns its result; events
    /// arriving meanwhile are not needed by these tests and are skipped.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.socket.send(Message::text(msg.to_string())).await?;
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.socket.next())
                .await
                .with_context(|| format!("{method}: no answer from chromium"))?
                .context("chromium closed DevTools")??;
            let Message::Text(text) = frame else {
                continue;
            };
            let v: Value = serde_json::from_str(&text)?;
            if v["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(e) = v.get("error") {
                bail!("{method}: {e}");
            }
            return Ok(v["result"].clone());
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expression` is true in the page (a navigation in between is fine).
    pub async fn wait_for(&mut self, expression: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            // During a navigation the old page's context is gone: not an error, not yet true.
            if let Ok(Value::Bool(true)) = self.eval(expression).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let body = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await
                    .unwrap_or_default();
                bail!("waited {PAGE_TIMEOUT:?} for `{expression}`; the page shows: {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens `url` and waits until it has loaded (scripts included).
    pub async fn open(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({"url": url})).await?;
        let href = serde_json::to_string(url)?;
        self.wait_for(&format!(
            "document.readyState === 'complete' && location.href === {href}"
        ))
        .await
    }

    /// The page's visible text.
    pub async fn text(&mut self, selector: &str) -> anyhow::Result<String> {
        let sel = serde_json::to_string(selector)?;
        let v = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); return e ? e.innerText : null; }})()"
            ))
            .await?;
        v.as_str()
            .map(str::to_owned)
            .with_context(|| format!("no element {selector} on the page"))
    }

    /// Types `text` into the element `selector` as a user would (focus, then input events).
    pub async fn type_into(&mut self, selector: &str, text: &str) -> anyhow::Result<()> {
        let sel = serde_json::to_string(selector)?;
        self.eval(&format!("document.querySelector({sel}).focus()"))
            .await?;
        self.call("Input.insertText", json!({"text": text})).await?;
        Ok(())
    }

    /// Chooses `file` in the file input `selector`.
    pub async fn choose_file(&mut self, selector: &str, file: &Path) -> anyhow::Result<()> {
        let sel = serde_json::to_string(selector)?;
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": format!("document.querySelector({sel})")}),
            )
            .await?;
        let object = r["result"]["objectId"]
            .as_str()
            .with_context(|| format!("no element {selector}"))?
            .to_owned();
        self.call(
            "DOM.setFileInputFiles",
            json!({"files": [file.to_string_lossy()], "objectId": object}),
        )
        .await?;
        Ok(())
    }

    /// Saves a PNG screenshot of the whole page to `path`.
    pub async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("no screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}
