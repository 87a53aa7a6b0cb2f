//! `loadtest run` tells the truth: against the service with its default rate limit, throughput
//! counts successes only, the run says why most answers failed and exits 3; a progress line comes
//! each second; a base URL without a scheme is refused.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The service binary, built beside this one by `cargo test --workspace` (its own tests need it).
fn service_binary() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_BIN_EXE_loadtest"));
    let service = here.with_file_name("cs-user-management");
    assert!(
        service.exists(),
        "{} is missing: run the tests with --workspace (scripts/test.sh does)",
        service.display()
    );
    service
}

/// The service, on the embedded store in a directory of its own, with the default rate limit;
/// stopped when dropped.
struct Service {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Service {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("loadtest-run-{}-{port}", std::process::id()));
        let child = Command::new(service_binary())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("STORAGE_BACKEND", "embedded")
            .env("TOKENS_BACKEND", "embedded")
            .env("DATA_DIR", &dir)
            .env("JWT_SECRET_KEY", "a-test-secret-of-at-least-32-bytes-long!")
            .env("BCRYPT_COST", "4")
            .env("SERVER_WORKERS", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the service starts");
        let service = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !service.live() {
            assert!(
                Instant::now() < deadline,
                "the service did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    fn live(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut head = [0_u8; 12];
        stream
            .write_all(b"GET /health/live HTTP/1.0\r\n\r\n")
            .and_then(|()| stream.read_exact(&mut head))
            .is_ok_and(|()| head.ends_with(b" 200"))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn loadtest(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("loadtest runs")
}

#[test]
fn a_rate_limited_run_counts_successes_only_says_why_and_exits_3() {
    let service = Service::start();
    let duration = 3.0;

    let out = loadtest(&[
        "run",
        "--base-url",
        &service.url(),
        "--scenario",
        "login",
        "--concurrency",
        "8",
        "--users",
        "4",
        "--duration",
        &duration.to_string(),
        "--json",
    ]);

    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{said}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let answered = report["requests"].as_u64().unwrap_or(0);
    let ok = report["ok"].as_u64().unwrap_or(0);
    assert!(answered > 5 * ok, "most answers are refusals: {report}");
    // The default budget of one address: a burst of 30, then 10 a second.
    let most = (30.0 + 10.0 * duration) / duration;
    let rps = report["rps"].as_f64().unwrap_or(f64::MAX);
    assert!(
        rps <= most * 1.2,
        "throughput {rps}/s is of successes: {report}"
    );
    assert!(
        said.contains("% 429: the service's AUTH_RATE_LIMIT"),
        "{said}"
    );
    assert!(said.contains("below --min-success 95"), "{said}");
    let progress = said.lines().filter(|l| l.contains("s] ok ")).count();
    assert!(progress >= 2, "a progress line each second: {said}");
}

#[test]
fn a_base_url_without_a_scheme_is_refused() {
    let out = loadtest(&[
        "run",
        "--base-url",
        "127.0.0.1:9",
        "--scenario",
        "get",
        "--duration",
        "1",
    ]);

    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("has no scheme"), "{said}");
}

/// Under a terminal (`script` gives the run one, as an operator's shell does), a progress line
/// comes at least once a second, before the report.
#[test]
fn under_a_terminal_a_progress_line_comes_each_second() {
    let command = format!(
        "{} run --base-url http://127.0.0.1:9 --scenario get --concurrency 1 --duration 3 \
         --min-success 0",
        env!("CARGO_BIN_EXE_loadtest")
    );

    let out = Command::new("timeout")
        .args(["60", "script", "-q", "-e", "-c", &command, "/dev/null"])
        .output()
        .expect("script (util-linux) runs");

    let said = String::from_utf8_lossy(&out.stdout);
    let progress = said.lines().filter(|l| l.contains("s] ok ")).count();
    // At 1 s and 2 s; at 3 s the report comes.
    assert!(progress >= 2, "a progress line each second of 3: {said}");
    let report = said.find("successes:").expect("the report");
    let last_progress = said.rfind("s] ok ").unwrap_or(usize::MAX);
    assert!(last_progress < report, "progress before the report: {said}");
}
