//! `/ops`, the live operations page, rendered by headless Chromium: after its script has polled
//! `/health` the DOM holds a card per actor and an entry per dependency, and a screenshot of it
//! can be taken (`target/ops-screenshot.png`). Chromium is required: a missing browser fails the
//! test (`scripts/test.sh` installs it; `CHROMIUM` names another binary).
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use reqwest::StatusCode;
use tokio::process::Command;

use crate::helpers::{spawn_app, TestApp};

const ACTORS: [&str; 5] = ["account", "db_queue", "token", "session", "hasher"];

/// Flags for a quiet, isolated, headless run; `--virtual-time-budget` lets the page's timers
/// (the 2 s poll) run for 8 virtual seconds, i.e. about four polls, before the dump.
const HEADLESS_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--virtual-time-budget=8000",
];

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// A fresh Chromium profile directory, removed when dropped.
struct Profile(PathBuf);

impl Profile {
    fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("ops-page-chromium-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        Profile(dir)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs headless Chromium on `url` with `extra` flags, bounded by `timeout`. Awaited on the
/// test's runtime (which also serves the app), so the service keeps answering meanwhile.
async fn run_chromium(extra: &[&str], url: &str) -> Output {
    let profile = Profile::new();
    let binary = chromium();
    let output = Command::new("timeout")
        .args(["-k", "5", "60", &binary])
        .args(HEADLESS_FLAGS)
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("`timeout` runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(126 | 127) => panic!(
            "Chromium `{binary}` could not be run ({}): install it \
             (`apt-get install -y chromium`; scripts/test.sh does) or set CHROMIUM to its path",
            stderr.trim()
        ),
        Some(124 | 137) => panic!("Chromium did not finish within 60 s; stderr:\n{stderr}"),
        _ => assert!(
            output.status.success(),
            "Chromium failed ({}); stderr:\n{stderr}",
            output.status
        ),
    }
    output
}

/// The number the page shows in its "N samples" footer.
fn samples_shown(dom: &str) -> usize {
    let marker = "id=\"samples\">";
    let start = dom.find(marker).expect("the samples counter") + marker.len();
    let digits: String = dom[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a sample count")
}

/// A few registrations and logins, so the actors' figures are not all zero.
async fn some_traffic(app: &TestApp) {
    for _ in 0..3 {
        app.signed_in_user().await;
    }
}

#[actix_web::test]
async fn the_ops_page_renders_every_actor_and_dependency_from_health() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/ops")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);

    let output = run_chromium(&["--dump-dom"], &app.url("/ops")).await;

    let dom = String::from_utf8_lossy(&output.stdout);
    for actor in ACTORS {
        assert!(
            dom.contains(&format!("data-actor=\"{actor}\"")),
            "no card for actor {actor} in the rendered page:\n{dom}"
        );
    }
    for dependency in crate::helpers::dependency_names() {
        assert!(
            dom.contains(&format!("data-dependency=\"{dependency}\"")),
            "no entry for dependency {dependency} in the rendered page:\n{dom}"
        );
    }
    // The status pill, filled in from a successful poll (the script's own text has no `>`).
    assert!(
        dom.contains(">healthy</span>"),
        "the page should show the service as healthy:\n{dom}"
    );
    assert!(
        samples_shown(&dom) >= 2,
        "the page should keep polling /health:\n{dom}"
    );
}

#[actix_web::test]
async fn a_screenshot_of_the_ops_page_under_traffic_is_written() {
    let app = spawn_app().await;
    some_traffic(&app).await;
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let png = target.join("ops-screenshot.png");
    let _ = std::fs::remove_file(&png);

    run_chromium(
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
        ],
        &app.url("/ops"),
    )
    .await;

    let bytes = std::fs::read(&png).expect("Chromium wrote the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    // A blank 1280x900 page compresses to a few kilobytes; the rendered cards are far more.
    assert!(
        bytes.len() > 20_000,
        "{} is only {} bytes",
        png.display(),
        bytes.len()
    );
}
