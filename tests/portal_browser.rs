//! The producer portal in a real browser: a devnet of real processes with
//! `producer:alice`'s Personal Vault; headless Debian `chromium`, driven over
//! WebDriver by `chromedriver` (plain HTTP/1.1 on loopback, no client library),
//! opens the sign-in page, the CLI signs the challenge it shows, the browser posts
//! the form, gets the session cookie and lands on the portal, whose DOM shows
//! marketing granted; the browser submits the page's revoke form and the DOM shows
//! it revoked, as the Vault holds it.
//!
//! Needs `chromium` and `chromium-driver` (.ci/run installs them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod deployed;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deployed::{cli_json, Net};
use serde_json::{json, Value};

struct Driver {
    child: Child,
    port: u16,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = http(self.port, "DELETE", &path, &Value::Null);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, method: &str, path: &str, body: &Value) -> std::io::Result<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(90)))?;
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // chromedriver keeps the connection open: read the head, then Content-Length bytes.
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        out.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&out).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok(serde_json::from_slice(&payload).unwrap_or_else(|e| panic!("{method} {path}: {e}: {head}")))
}

impl Driver {
    fn start(profile: &std::path::Path) -> Driver {
        assert!(
            std::path::Path::new("/usr/bin/chromedriver").exists(),
            "chromedriver not found: install Debian's chromium chromium-driver (.ci/run does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed when dropped, also if what follows fails.
        let mut driver = Driver {
            child,
            port,
            session: String::new(),
        };
        let start = Instant::now();
        while http(port, "GET", "/status", &Value::Null).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = http(port, "POST", "/session", &caps).unwrap();
        driver.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        driver
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let v = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            &body,
        )
        .unwrap();
        assert!(v["value"].get("error").is_none(), "{method} {path}: {v}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// A PNG screenshot of the page, kept under the test's target directory.
    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let b64 = self.call("GET", "/screenshot", Value::Null);
        let png = base64_decode(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, png).unwrap();
        file
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn chromium_signs_in_to_the_portal_and_revokes_marketing() {
    let net = Net::start_with_personal_vault(2);
    let gw = net.layout.gateways()[0];
    let tmp = tempfile::tempdir().unwrap();
    let driver = Driver::start(&tmp.path().join("profile"));

    // Without a session the portal sends the browser to the sign-in page.
    driver.go(&format!("https://{gw}/explorer/portal"));
    let at = driver.js("return location.pathname");
    assert_eq!(at, "/explorer/portal/sign-in");
    let challenge = driver.js("return document.getElementById('challenge').textContent");
    let challenge = challenge.as_str().unwrap().to_owned();
    let signed = cli_json(&net, &["producer", "sign-in", "--challenge", &challenge]);
    let script = format!(
        "document.querySelector('input[name=caller]').value = 'producer:alice';\
         document.querySelector('input[name=signature]').value = '{}';\
         document.querySelector('form[action=\"/explorer/portal/sign-in\"]').submit();",
        signed["signature"].as_str().unwrap()
    );
    driver.js(&script);
    let state = |d: &Driver| -> String {
        let start = Instant::now();
        loop {
            let v = d.js(
                "var c = document.querySelector('tr[data-scope=marketing] .consent-state');\
                 return c ? c.textContent.trim() : null",
            );
            if let Some(s) = v.as_str() {
                return s.to_owned();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no portal page");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(state(&driver), "granted");
    assert_eq!(driver.js("return location.pathname"), "/explorer/portal");
    assert_eq!(
        driver.js("return document.getElementById('producer').textContent"),
        "producer:alice"
    );
    driver.screenshot("portal-granted.png");
    // HttpOnly: the page's scripts do not see the session cookie.
    assert_eq!(driver.js("return document.cookie"), "");

    // Revoke with the page's own form.
    driver.js("document.querySelector('tr[data-scope=marketing] form').submit();");
    let start = Instant::now();
    while state(&driver) != "revoked" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "marketing not revoked"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shot = driver.screenshot("portal-revoked.png");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    let consent = cli_json(&net, &["producer", "consent"]);
    let marketing = consent["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scope"] == "marketing")
        .unwrap();
    assert_eq!(marketing["granted"], false, "{consent}");
}
