//! The explorer in a real browser: `symphony devnet up` (real processes) prints the
//! explorer's URL; headless Debian `chromium` opens it (the network page, with the
//! vendored htmx loaded and run), a Luckin campaign is submitted with the CLI, and
//! chromium's DOM of the task page shows `completed` and a fee split adding up to
//! the fee charged. Screenshots are kept under the test's target directory
//! (`CARGO_TARGET_TMPDIR/explorer-screenshots`), not in the repository.
//!
//! Needs `chromium` (CI installs `chromium chromium-driver` in `.ci/run`); without
//! it the test fails saying so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_symphony");

/// Stops the devnet (`symphony devnet down`) when dropped, also on failure.
struct Devnet {
    dir: PathBuf,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["devnet", "down", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn symphony(dir: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "symphony {args:?} failed:\n{stderr}\n{stdout}"
    );
    (stdout, stderr)
}

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "chromium not found (/usr/bin/chromium): this browser test needs Debian's \
                 chromium; install it with `apt-get install -y --no-install-recommends \
                 chromium chromium-driver` (.ci/run does)"
            )
        })
}

/// Runs headless chromium on `url` with `action` (`--dump-dom` or
/// `--screenshot=<file>`); its standard output. Killed after 90 s.
fn browse(profile: &Path, action: &str, url: &str) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // The devnet's gateways are TLS from the devnet's own CA.
            "--ignore-certificate-errors",
            "--window-size=1200,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(action)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium {action} {url} did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `<tr class="share">` amounts and the total of the fee-split table in `dom`.
fn fee_split(dom: &str) -> (Vec<u64>, u64) {
    let start = dom
        .find("<table class=\"fee-split\">")
        .unwrap_or_else(|| panic!("no fee split in the DOM: {dom}"));
    let table = &dom[start..start + dom[start..].find("</table>").unwrap()];
    let value = |row: &str| -> u64 {
        let at = row.find("data-micro-sym=\"").unwrap() + "data-micro-sym=\"".len();
        row[at..at + row[at..].find('"').unwrap()].parse().unwrap()
    };
    let shares = table
        .split("<tr class=\"share\">")
        .skip(1)
        .map(value)
        .collect();
    (
        shares,
        value(table.split("<tr class=\"total\">").nth(1).unwrap()),
    )
}

#[test]
fn chromium_shows_the_network_and_a_completed_luckin_task_with_its_fee_split() {
    let started = Instant::now();
    let browser = chromium();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("devnet");
    let profile = tmp.path().join("chromium-profile");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explorer-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let devnet = Devnet { dir: dir.clone() };
    let (up, _) = symphony(
        &devnet.dir,
        &[
            "devnet",
            "up",
            "--enterprises",
            "4",
            "--subjects",
            "2000",
            "--records",
            "20000",
        ],
    );
    let url = up
        .split_whitespace()
        .skip_while(|w| *w != "explorer:")
        .nth(1)
        .unwrap_or_else(|| panic!("`devnet up` printed no explorer URL:\n{up}"))
        .to_owned();
    assert!(
        url.starts_with("https://127.0.0.1:") && url.ends_with("/explorer"),
        "{url}"
    );

    // The network page, rendered by chromium with the vendored htmx run (htmx
    // inserts its indicator style into the head).
    let dom = browse(&profile, "--dump-dom", &url);
    assert!(
        dom.contains("<h2>Masters</h2>"),
        "{}: {dom}",
        browser.display()
    );
    assert!(dom.contains("<b>leader</b>"), "{dom}");
    assert!(dom.contains(".htmx-indicator"), "htmx did not run: {dom}");

    // A Luckin campaign through the CLI.
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/luckin.toml");
    let (out, _) = symphony(&dir, &["task", "submit", spec, "--json"]);
    let submitted: Value = serde_json::from_str(&out).unwrap();
    let request = submitted["request_id"].as_str().unwrap().to_owned();
    let t = Instant::now();
    let status = loop {
        let (out, _) = symphony(&dir, &["task", "status", &request, "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        if v["status"] == "completed" || v["status"] == "rejected" {
            break v;
        }
        assert!(t.elapsed() < Duration::from_secs(180), "not final: {v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status["status"], "completed", "{status}");
    let task = status["task_id"].as_str().unwrap();
    let fee = status["fee_charged_micro_sym"].as_u64().unwrap();

    let page = format!("{url}/tasks/{task}");
    let dom = browse(&profile, "--dump-dom", &page);
    assert!(dom.contains("<td class=\"status\">completed</td>"), "{dom}");
    assert!(dom.contains("<h2>Fee split</h2>"), "{dom}");
    let (shares, total) = fee_split(&dom);
    assert!(shares.len() >= 2, "{shares:?}");
    assert_eq!(shares.iter().sum::<u64>(), total, "{dom}");
    assert_eq!(
        total, fee,
        "the page's fee split differs from the fee charged"
    );

    for (name, target) in [("network", url.clone()), ("luckin-task", page)] {
        let file = shots.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&file);
        browse(
            &profile,
            &format!("--screenshot={}", file.display()),
            &target,
        );
        let png = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("no screenshot {}: {e}", file.display()));
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{}",
            file.display()
        );
        eprintln!("screenshot: {}", file.display());
    }
    drop(devnet);
    eprintln!("whole test {:.1} s", started.elapsed().as_secs_f64());
}
