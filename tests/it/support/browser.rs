//! A real headless Chromium driven over WebDriver (chromedriver on a free
//! port, fantoccini as the client), for the console's tests: explicit
//! waits with deadlines, never sleeps; screenshots when
//! `TASKD_CONSOLE_SCREENSHOTS` names a directory.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long any wait for the page lasts.
pub const WAIT: Duration = Duration::from_secs(30);

fn exe(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_string())
}

/// A browser of its own: a chromedriver process, a Chromium with a fresh
/// profile, and the WebDriver session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at 1280x800.
    pub async fn start() -> Browser {
        let driver_exe = exe("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = exe("CHROMIUM", "/usr/bin/chromium");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let driver = Command::new(&driver_exe)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {driver_exe} (install Debian's chromium-driver; .ci/run does): {e}")
            });
        let profile = std::env::temp_dir().join(format!(
            "taskd-console-profile-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        let client = loop {
            let mut builder =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            match builder.capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "chromedriver not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session from {driver_exe}: {e}"),
            }
        };
        let b = Browser {
            client,
            driver,
            profile,
        };
        b.viewport(1280, 800).await;
        b
    }

    /// Resizes the window so that the page itself gets `width` x `height`.
    pub async fn viewport(&self, width: u32, height: u32) {
        let chrome = self
            .js("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];")
            .await;
        let extra = |i: usize| chrome[i].as_u64().unwrap_or(0) as u32;
        self.client
            .set_window_size(width + extra(0), height + extra(1))
            .await
            .expect("resize the window");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Waits until `css` matches an element; returns it.
    pub async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?} within {WAIT:?}: {e}"))
    }

    /// Waits until `script` (a function body returning a value) returns
    /// something truthy; returns it.
    pub async fn wait_js(&self, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.js(script).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{what}: not true within {WAIT:?} (last: {v})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    pub async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if ok(&text) {
                return text;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("text of {css:?} never matched within {WAIT:?} (last: {text:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a function body in the page; returns what it returns.
    pub async fn js(&self, body: &str) -> Value {
        self.client
            .execute(body, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// Runs an async function body in the page (it may `await`).
    pub async fn js_async(&self, body: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];\n\
             (async () => {{ {body} }})().then(done, (e) => done({{ error: String(e) }}));"
        );
        self.client
            .execute_async(&script, vec![])
            .await
            .unwrap_or_else(|e| panic!("async script failed: {e}\n{body}"))
    }

    pub async fn click(&self, css: &str) {
        self.wait(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css:?}: {e}"));
    }

    /// Types into `css`, finding it again if the page redrew it meanwhile.
    pub async fn fill(&self, css: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = self.wait(css).await;
            match e.clear().await {
                Ok(()) => match e.send_keys(text).await {
                    Ok(()) => return,
                    Err(err) if tokio::time::Instant::now() >= deadline => {
                        panic!("cannot type into {css:?}: {err}")
                    }
                    Err(_) => {}
                },
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    panic!("cannot clear {css:?}: {err}")
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    /// Saves a screenshot as `{dir}/{name}.png` when
    /// `TASKD_CONSOLE_SCREENSHOTS=dir` is set.
    pub async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("TASKD_CONSOLE_SCREENSHOTS") else {
            return;
        };
        // Passing notices would hide what the picture is for.
        self.js("const t = document.getElementById('toast'); t.style.transition = 'none'; t.classList.remove('shown');")
            .await;
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let path = std::path::Path::new(&dir).join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
    }

    /// Signs in through the console's form at `base`.
    pub async fn sign_in(&self, base: &str, name: &str, password: &str) {
        self.goto(&format!("{base}/console")).await;
        self.fill("#sign-in-name", name).await;
        self.fill("#sign-in-password", password).await;
        self.click("#sign-in-submit").await;
        self.wait_text("#who", |t| t.starts_with(name)).await;
    }

    /// Accepts the confirmation dialog the console opened.
    pub async fn confirm(&self) {
        self.wait("dialog#confirm[open]").await;
        self.click("#confirm-ok").await;
        self.wait_js(
            "the dialog closes",
            "return !document.getElementById('confirm').open;",
        )
        .await;
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
