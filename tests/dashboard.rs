//! The admin dashboard in a real browser: headless Chromium, driven by
//! chromedriver over plain W3C WebDriver (JSON over HTTP, with ureq), shows
//! a running spate's numbers and queues, and its suspend and resume buttons
//! stop and restart delivery to a domain.
//!
//! Needs Debian's `chromium` and `chromium-driver` (and Postfix's
//! smtp-sink). With SPATE_SCREENSHOT set, the screenshot it takes goes to
//! docs/dashboard.png.

mod common;
use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);
/// How long the page may take to show what the server knows (it polls the
/// summary every second, the queues and actions every two).
const PAGE: Duration = Duration::from_secs(30);

/// chromedriver with one session of headless Chromium. Dropping it quits
/// the session and kills chromedriver (and anything left in its process
/// group: the browser, should the session not have quit it).
struct Browser {
    driver: Child,
    base: String,
    session: Option<String>,
    agent: ureq::Agent,
    /// The browser profile, chromedriver's log, the screenshot.
    dir: tempfile::TempDir,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

impl Browser {
    fn start() -> Browser {
        let mut dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let first = 20000 + (std::process::id() % 10000) as u16;
        for attempt in 0..20u16 {
            let port = 20000 + (first - 20000 + attempt * 7) % 10000;
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                continue; // taken
            }
            let driver = {
                use std::os::unix::process::CommandExt;
                Command::new("chromedriver")
                    .arg(format!("--port={port}"))
                    .stdin(Stdio::null())
                    .stdout(std::fs::File::create(&log).unwrap())
                    .stderr(Stdio::from(
                        std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
                    ))
                    .process_group(0)
                    .spawn()
                    .expect("spawn chromedriver")
            };
            let mut b = Browser {
                driver,
                base: format!("http://127.0.0.1:{port}"),
                session: None,
                agent: agent(Duration::from_secs(60)),
                dir,
            };
            match b.wait_ready() {
                Ok(()) => {
                    b.new_session();
                    return b;
                }
                // Lost the port to someone else: the next one.
                Err(why) => {
                    eprintln!("chromedriver on port {port}: {why}; trying another port");
                    dir = std::mem::replace(&mut b.dir, tempfile::tempdir().unwrap());
                    drop(b);
                }
            }
        }
        panic!("no port for chromedriver after 20 tries");
    }

    /// Waits until chromedriver's /status says ready; Err if it exited.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let quick = agent(Duration::from_secs(2));
        loop {
            if let Some(status) = self.driver.try_wait().unwrap() {
                return Err(format!("exited with {status}: {}", self.driver_log()));
            }
            if let Ok(mut r) = quick.get(format!("{}/status", self.base)).call() {
                let text = r.body_mut().read_to_string().unwrap_or_default();
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    return Ok(());
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver not ready after 30 s: {}",
                self.driver_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn new_session(&mut self) {
        let profile = self.dir.path().join("profile");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", profile.display()),
            "--window-size=1280,900".into(),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "args": args },
        }}});
        let v = self
            .call("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("{e}\nchromedriver log:\n{}", self.driver_log()));
        self.session = Some(v["sessionId"].as_str().expect("a session id").to_string());
    }

    fn driver_log(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// One WebDriver command; its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let r = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let mut r = r.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = r.status();
        let text = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{method} {path}: {status}, not JSON ({e}): {text}"))?;
        if status.is_success() {
            return Ok(v["value"].clone());
        }
        Err(format!(
            "{method} {path}: {status} {}: {}",
            v["value"]["error"].as_str().unwrap_or("?"),
            v["value"]["message"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        ))
    }

    fn session_path(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session.as_ref().unwrap())
    }

    fn open(&self, url: &str) {
        let path = self.session_path("/url");
        self.call("POST", &path, Some(json!({ "url": url })))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn js(&self, script: &str, args: Value) -> Value {
        let path = self.session_path("/execute/sync");
        self.call(
            "POST",
            &path,
            Some(json!({ "script": script, "args": args })),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The text of the first element matching `css`, if there is one.
    fn text(&self, css: &str) -> Option<String> {
        let v = self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        );
        v.as_str().map(|s| s.trim().to_string())
    }

    fn exists(&self, css: &str) -> bool {
        self.js(
            "return document.querySelector(arguments[0]) !== null;",
            json!([css]),
        ) == true
    }

    /// Finds the element and clicks it as a user would (WebDriver's
    /// Element Click: scrolled into view, a real mouse event). Err if it is
    /// not there, or was replaced between the find and the click (the page
    /// rebuilds its tables on every poll).
    fn try_click(&self, css: &str) -> Result<(), String> {
        let found = self.call(
            "POST",
            &self.session_path("/element"),
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        let id = found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .ok_or_else(|| format!("no element reference in {found}"))?
            .to_string();
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .map(|_| ())
    }

    fn click(&self, css: &str) {
        let start = Instant::now();
        loop {
            match self.try_click(css) {
                Ok(()) => return,
                Err(e) => assert!(
                    start.elapsed() < PAGE,
                    "could not click {css} within {PAGE:?}: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls the page until `cond` holds; on timeout, says what the page's
    /// status line showed.
    fn wait(&self, limit: Duration, what: &str, mut cond: impl FnMut(&Browser) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; the page's status: {:?}",
                self.text("#status")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the viewport.
    fn screenshot(&self) -> Vec<u8> {
        let v = self
            .call("GET", &self.session_path("/screenshot"), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let png = base64_decode(v.as_str().expect("base64 text"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        png
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let quick = agent(Duration::from_secs(20));
            let _ = quick.delete(format!("{}/session/{id}", self.base)).call();
        }
        // chromedriver leads its own process group: end it all.
        let pgid = self.driver.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("{:?} is not base64", c as char),
        }
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// The JSON a `spate ctl --json` command printed.
fn ctl_json(spate: &Spate, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out) = spate.ctl(&all);
    assert!(ok, "spate ctl {args:?}: {out}");
    let json = &out[out.find('{').unwrap_or(0)..out.rfind('}').map_or(out.len(), |i| i + 1)];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("spate ctl {args:?}: {e}: {out}"))
}

/// GET from the admin API (reads need no token on loopback).
fn api_get(spate: &Spate, path: &str) -> Value {
    let url = format!("{}{path}", spate.admin_url());
    let mut r = agent(Duration::from_secs(20))
        .get(&url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status();
    let text = r.body_mut().read_to_string().unwrap();
    assert!(status.is_success(), "GET {url}: {status}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn screenshot_path(browser: &Browser) -> PathBuf {
    if std::env::var_os("SPATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        docs.join("dashboard.png")
    } else {
        browser.dir.path().join("dashboard.png")
    }
}

#[test]
fn the_dashboard_shows_a_running_spate_and_its_suspend_button_stops_delivery() {
    require("chromium");
    require("chromedriver");
    let sink_addr = free_addr();
    let sink = Sink::start(&sink_addr, &[]);
    let spate = Spate::start(&["--smarthost", &sink_addr, "--cores", "0-1"]);
    let token = spate.admin_token();
    let mut smtp = spate.connect();
    for _ in 0..2 {
        smtp.transaction(
            "s@a.test",
            &["r@shown.test"],
            b"Subject: shown\r\n\r\nx\r\n",
        );
    }
    wait_until(LONG, "2 messages at the sink", || sink.count() == 2);

    // The page takes the token from the fragment, keeps it, and drops the
    // fragment from the address bar; it shows the running spate's numbers.
    let browser = Browser::start();
    browser.open(&format!("{}/#token={token}", spate.admin_url()));
    browser.wait(PAGE, "#n-delivered to show 2", |b| {
        b.text("#n-delivered").as_deref() == Some("2")
    });
    assert_eq!(browser.text("#n-received").as_deref(), Some("2"));
    let kept = browser.js(
        "return [localStorage.getItem('spate-token'), location.hash];",
        json!([]),
    );
    assert_eq!(
        kept,
        json!([token, ""]),
        "the token kept, the fragment gone"
    );

    // held.test may take one message a minute: the first goes at once, the
    // other two wait in its queue, which the page lists.
    let set = ctl_json(
        &spate,
        &[
            "override",
            "--domain",
            "held.test",
            "--set",
            "message_rate=1/min",
            "--for",
            "10m",
        ],
    );
    let override_id = set["id"].as_str().expect("the override's id").to_string();
    for i in 0..3 {
        let body = format!("Subject: held {i}\r\n\r\nx\r\n");
        smtp.transaction("s@a.test", &["a@held.test"], body.as_bytes());
    }
    wait_until(LONG, "the first held.test message at the sink", || {
        sink.count() == 3
    });
    let row = r#"#queues tr[data-domain="held.test"]"#;
    browser.wait(PAGE, "a held.test row in the queue table", |b| {
        b.exists(row)
    });

    // Its suspend button suspends the domain.
    browser.click(&format!("{row} button.suspend"));
    browser.wait(PAGE, "the page to report the suspension", |b| {
        let status = b.text("#status").unwrap_or_default();
        let class = b.js(
            "return document.getElementById('status').className;",
            json!([]),
        );
        assert_ne!(class, "err", "the page reported an error: {status}");
        status.contains("suspended held.test")
    });
    let mut suspension = String::new();
    wait_until(LONG, "spate ctl actions to list the suspension", || {
        let actions = ctl_json(&spate, &["actions"]);
        let found = actions["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "suspend" && a["selector"]["domain"] == "held.test");
        if let Some(a) = found {
            suspension = a["id"].as_str().unwrap().to_string();
        }
        found.is_some()
    });
    let (ok, out) = spate.ctl(&["actions"]);
    assert!(ok && out.contains("held.test"), "{out}");

    // With the rate override ended only the suspension holds held.test's
    // two messages, and it does.
    ctl_json(&spate, &["end", &override_id]);
    wait_until(
        LONG,
        "held.test's 2 messages held by the suspension alone",
        || {
            let q = api_get(&spate, "/api/v1/queues/held.test");
            q["suspended"] == 2 && q["ready"] == 0 && q["actions"] == json!([suspension])
        },
    );
    assert_eq!(sink.count(), 3, "delivery to held.test stopped");

    // The page shows it all. The picture (for the documentation) is taken
    // now, while there is a suspended queue and an action to show.
    let shown = [
        (format!("{row}.susp"), "held.test's row marked suspended"),
        (
            format!(r#"#actions tr[data-id="{suspension}"]"#),
            "the suspension in the actions table",
        ),
    ];
    for (css, what) in &shown {
        browser.wait(PAGE, what, |b| b.exists(css));
    }
    browser.wait(PAGE, "the override gone from the actions table", |b| {
        !b.exists(&format!(r#"#actions tr[data-id="{override_id}"]"#))
    });
    // (The summary's "ready" counts the held entries too.)
    for (id, n) in [
        ("#n-received", "5"),
        ("#n-delivered", "3"),
        ("#n-ready", "2"),
        ("#n-suspended", "2"),
    ] {
        browser.wait(PAGE, &format!("{id} to show {n}"), |b| {
            b.text(id).as_deref() == Some(n)
        });
    }
    let png = browser.screenshot();
    let path = screenshot_path(&browser);
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());

    // Its resume button ends the suspension: the two messages go.
    browser.click(&format!("{row} button.resume"));
    wait_until(LONG, "all 5 messages at the sink", || sink.count() == 5);
    browser.wait(PAGE, "the page to report the resumption", |b| {
        b.text("#status")
            .unwrap_or_default()
            .contains("resumed held.test")
    });
    browser.wait(PAGE, "#n-delivered to show 5", |b| {
        b.text("#n-delivered").as_deref() == Some("5")
    });
    let actions = ctl_json(&spate, &["actions"]);
    assert_eq!(actions["actions"], json!([]), "no actions left in force");
}
