//! The suite's kit for tests that run real processes: scratch directories, child processes
//! (Redis, SecantusDB, the service binary) killed when dropped, free ports, bounded polls, and
//! requests recorded with what came back, checked against the contract (a success or a 503
//! with `Retry-After`, never a 500 or a hang).
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::rt::task::JoinHandle;
use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{Isolation, TestApp, PASSWORD};

/// A request unanswered after this long is a hang. Well above every deadline of the service
/// (the longest, `ACTOR_CALL_TIMEOUT_MS`, defaults to 10 s).
const HANG: Duration = Duration::from_secs(15);

/// How long a server we start (Redis, SecantusDB, the service binary) may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between the iterations of a load loop, and between the attempts of a bounded poll.
pub(crate) const PACE: Duration = Duration::from_millis(10);
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// Child processes, scratch directories, polling
// ---------------------------------------------------------------------------------------------

/// A directory under the system temp dir, removed when dropped (kept, and named on stderr, when
/// the test is failing, so the servers' logs can be read).
pub(crate) struct ScratchDir(pub(crate) PathBuf);

impl ScratchDir {
    pub(crate) fn new(tag: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = std::env::temp_dir().join(format!("cs-um-resilience-{tag}-{}", &id[..12]));
        std::fs::create_dir_all(&path).expect("the scratch directory is created");
        Self(path)
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process this test started; SIGKILLed when dropped, so a failing test leaves none
/// behind. Its stdout and stderr go to `log`.
pub(crate) struct Server {
    name: &'static str,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Server {
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[&str],
        env: impl IntoIterator<Item = (String, String)>,
        log: PathBuf,
    ) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the log file opens");
        let child = Command::new(program)
            .args(args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("the log file handle is cloned"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} ({}) starts: {e}", program.display()));
        Self { name, child, log }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child
            .id()
            .expect("the process has not been reaped yet")
    }

    pub(crate) fn has_exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// SIGKILL and reap (the `kill -9` of an outage).
    pub(crate) async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The last lines of the process's output, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!(
            "--- last lines of {} ({}) ---\n{tail}",
            self.name,
            self.log.display()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A port nobody listens on when asked (another process may take it before it is bound).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Calls `probe` until it returns something or `within` has passed.
pub(crate) async fn poll_for<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Calls `probe` until it returns true or `within` has passed; says whether it did.
pub(crate) async fn poll_until<F, Fut>(within: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_for(within, || {
        let answer = probe();
        async move { answer.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Waits (bounded) until `up` answers true; false if the process exited or time ran out.
pub(crate) async fn wait_until_up<F, Fut>(server: &mut Server, mut up: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if server.has_exited() {
            return false;
        }
        if up().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A client whose timeout only catches hangs.
pub(crate) fn hang_detecting_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(HANG).build().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Requests and what came back
// ---------------------------------------------------------------------------------------------

/// An HTTP answer, read in full.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// What is wrong with this 503 as the contract wants it (a whole number of seconds in
    /// `Retry-After`, `{"success": false, "error": "<message>"}`), if anything.
    fn unavailable_problem(&self) -> Option<String> {
        let body = self.json();
        let retry_ok = self
            .retry_after
            .as_deref()
            .is_some_and(|v| v.trim().parse::<u64>().is_ok());
        let shape_ok = body["success"] == json!(false)
            && body["error"].as_str().is_some_and(|m| !m.is_empty());
        (!retry_ok || !shape_ok).then(|| {
            format!(
                "a 503 without a proper Retry-After ({:?}) or error shape: {}",
                self.retry_after, self.body
            )
        })
    }
}

/// One request and its outcome: a reply, or a transport error (a hang shows as a timeout).
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) label: String,
    pub(crate) sent_at: Instant,
    pub(crate) finished_at: Instant,
    pub(crate) outcome: Result<Reply, String>,
}

impl Exchange {
    pub(crate) fn status(&self) -> Option<StatusCode> {
        self.outcome.as_ref().ok().map(|r| r.status)
    }

    /// The new user's id when this was a successful registration.
    pub(crate) fn registered_id(&self) -> Option<String> {
        let reply = self.outcome.as_ref().ok()?;
        (reply.status == StatusCode::CREATED)
            .then(|| {
                reply.json()["data"]["user"]["_id"]
                    .as_str()
                    .map(str::to_string)
            })
            .flatten()
    }

    /// Why this exchange breaks the contract, given the statuses allowed here; a 503 must
    /// also be well formed, and a transport error (a hang included) is always a violation.
    pub(crate) fn violation(&self, allowed: &[StatusCode]) -> Option<String> {
        let problem = match &self.outcome {
            Err(e) => Some(e.clone()),
            Ok(reply) if !allowed.contains(&reply.status) => {
                Some(format!("status {}: {}", reply.status, reply.body))
            }
            Ok(reply) if reply.status == StatusCode::SERVICE_UNAVAILABLE => {
                reply.unavailable_problem()
            }
            Ok(_) => None,
        };
        problem.map(|p| {
            format!(
                "{} (sent {:?} into the test): {p}",
                self.label, self.sent_at
            )
        })
    }
}

pub(crate) async fn exchange(label: String, request: reqwest::RequestBuilder) -> Exchange {
    let sent_at = Instant::now();
    let outcome = async {
        let response = request.send().await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await?;
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }
    .await
    .map_err(|e: reqwest::Error| {
        if e.is_timeout() {
            format!("no answer within {HANG:?}, a hang: {e}")
        } else {
            format!("transport error: {e:?}")
        }
    });
    Exchange {
        label,
        sent_at,
        finished_at: Instant::now(),
        outcome,
    }
}

pub(crate) fn login_request(
    client: &reqwest::Client,
    base: &str,
    email: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
}

/// A registration of a user nobody has used before.
pub(crate) async fn register_new_user(client: &reqwest::Client, base: &str) -> Exchange {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..14];
    let email = format!("r_{tag}@example.com");
    let request = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"username": format!("r_{tag}"), "email": email, "password": PASSWORD}));
    exchange(format!("POST /auth/register {email}"), request).await
}

pub(crate) async fn ready_status(client: &reqwest::Client, base: &str) -> Option<StatusCode> {
    client
        .get(format!("{base}/health/ready"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

pub(crate) async fn ready_becomes(client: &reqwest::Client, base: &str, want: StatusCode) -> bool {
    poll_until(Duration::from_secs(5), || async {
        ready_status(client, base).await == Some(want)
    })
    .await
}

/// Everything the load loops sent, shared with the test body while they run.
pub(crate) type Journal = Arc<Mutex<Vec<Exchange>>>;

/// Load loops that run until `stop` is set, appending every exchange to a journal.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    journal: Journal,
    loops: Vec<JoinHandle<()>>,
}

impl Load {
    pub(crate) fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            journal: Arc::new(Mutex::new(Vec::new())),
            loops: Vec::new(),
        }
    }

    /// Adds a loop that repeats `request` (a fresh exchange each time) until stopped.
    pub(crate) fn add<F, Fut>(&mut self, mut request: F)
    where
        F: FnMut() -> Fut + 'static,
        Fut: Future<Output = Exchange> + 'static,
    {
        let stop = Arc::clone(&self.stop);
        let journal = Arc::clone(&self.journal);
        self.loops.push(actix_web::rt::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let done = request().await;
                let failed = done.outcome.is_err();
                journal.lock().unwrap().push(done);
                // A refused connection comes back at once: do not spin on it.
                tokio::time::sleep(if failed { POLL } else { PACE }).await;
            }
        }));
    }

    pub(crate) fn any(&self, predicate: impl Fn(&Exchange) -> bool) -> bool {
        self.journal.lock().unwrap().iter().any(predicate)
    }

    pub(crate) fn count(&self, predicate: impl Fn(&Exchange) -> bool) -> usize {
        self.journal
            .lock()
            .unwrap()
            .iter()
            .filter(|e| predicate(e))
            .count()
    }

    /// Stops the loops, waits for their last requests, and hands back everything they sent.
    pub(crate) async fn finish(self) -> Vec<Exchange> {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.loops {
            handle.await.expect("a load loop does not panic");
        }
        std::mem::take(&mut *self.journal.lock().unwrap())
    }
}

/// Figures for the report: how many of each status, transport errors, and the slowest answer.
pub(crate) fn summary(exchanges: &[Exchange]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for e in exchanges {
        let key = e
            .status()
            .map_or_else(|| "transport error".to_string(), |s| s.as_u16().to_string());
        *counts.entry(key).or_default() += 1;
    }
    let slowest = exchanges
        .iter()
        .max_by_key(|e| e.finished_at - e.sent_at)
        .map(|e| {
            format!(
                "{:?} ({}, {:?})",
                e.finished_at - e.sent_at,
                e.label,
                e.status()
            )
        })
        .unwrap_or_default();
    format!(
        "{} requests, by status {counts:?}, slowest answer {slowest}",
        exchanges.len()
    )
}

/// Asserts that every exchange was answered with one of `allowed` (a 503 well formed), naming
/// those that were not.
pub(crate) fn assert_only(exchanges: &[Exchange], allowed: &[StatusCode]) {
    let bad = violations(exchanges, allowed);
    assert!(
        bad.is_empty(),
        "{} of {} requests broke the contract (only {allowed:?}, a 503 with Retry-After, every \
         one answered):\n{}",
        bad.len(),
        exchanges.len(),
        bad.join("\n")
    );
}

pub(crate) fn violations(exchanges: &[Exchange], allowed: &[StatusCode]) -> Vec<String> {
    exchanges
        .iter()
        .filter_map(|e| e.violation(allowed))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Private servers
// ---------------------------------------------------------------------------------------------

async fn redis_answers_ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await?;
        Ok::<bool, std::io::Error>(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

/// A private, in-memory redis-server on `port` (with `extra` arguments), its log in `scratch`;
/// not yet waited for.
pub(crate) fn spawn_redis(
    name: &'static str,
    port: u16,
    extra: &[&str],
    scratch: &ScratchDir,
) -> Server {
    let port_arg = port.to_string();
    let dir = scratch.0.to_string_lossy().to_string();
    let mut args = vec!["--port", &port_arg, "--bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--save", "", "--appendonly", "no", "--dir", &dir]);
    Server::spawn(
        name,
        Path::new("redis-server"),
        &args,
        std::iter::empty(),
        scratch.join(&format!("redis-{port}.log")),
    )
}

/// A private, in-memory redis-server on `port`, ready to answer.
pub(crate) async fn start_redis(port: u16, scratch: &ScratchDir) -> Server {
    let mut server = spawn_redis("redis-server", port, &[], scratch);
    let up = wait_until_up(&mut server, || redis_answers_ping(port)).await;
    assert!(
        up,
        "redis-server did not answer on port {port}\n{}",
        server.log_tail()
    );
    server
}

/// The virtualenv's `bin` directory: where `TEST_PYTHON` lives.
fn venv_bin() -> PathBuf {
    let python = std::env::var("TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into());
    Path::new(&python)
        .parent()
        .expect("TEST_PYTHON is a path to the virtualenv's python")
        .to_path_buf()
}

pub(crate) async fn mongo_client(port: u16, selection_ms: u64) -> mongodb::Client {
    mongodb::Client::with_uri_str(format!(
        "mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS={selection_ms}"
    ))
    .await
    .expect("a valid MongoDB URI")
}

/// A private SecantusDB on `port` keeping its data in `data` (synced on every commit, so a
/// `kill -9` loses nothing it acknowledged), ready to answer a ping.
pub(crate) async fn start_secantus(port: u16, data: &Path, scratch: &ScratchDir) -> Server {
    start_secantus_with(port, data, &[], scratch).await
}

/// [`start_secantus`] with more flags (`--enable-test-commands`, say).
pub(crate) async fn start_secantus_with(
    port: u16,
    data: &Path,
    flags: &[&str],
    scratch: &ScratchDir,
) -> Server {
    std::fs::create_dir_all(data).unwrap();
    let port_arg = port.to_string();
    let data_arg = data.to_string_lossy().to_string();
    let mut server = Server::spawn(
        "secantusd-py",
        &venv_bin().join("secantusd-py"),
        &[
            "--host",
            "127.0.0.1",
            "--port",
            &port_arg,
            "--storage-path",
            &data_arg,
            "--log-level",
            "WARNING",
            "--sync-on-commit",
        ]
        .into_iter()
        .chain(flags.iter().copied())
        .collect::<Vec<_>>(),
        std::iter::empty(),
        scratch.join(&format!("secantus-{port}.log")),
    );
    let client = mongo_client(port, 500).await;
    let admin = client.database("admin");
    let up = wait_until_up(&mut server, || async {
        admin.run_command(doc! {"ping": 1}).await.is_ok()
    })
    .await;
    assert!(
        up,
        "SecantusDB did not answer a ping on port {port}\n{}",
        server.log_tail()
    );
    server
}

/// The real service binary against `iso` (plus `overrides`), answering `/health/live`.
pub(crate) async fn start_service(
    iso: &Isolation,
    overrides: &[(&str, &str)],
    scratch: &ScratchDir,
) -> (Server, TestApp) {
    // The port is free when picked but may be taken before the child binds it: try again then.
    for attempt in 0..3 {
        let port = free_port().to_string();
        let mut settings = overrides.to_vec();
        settings.push(("PORT", port.as_str()));
        let mut server = Server::spawn(
            "cs-user-management",
            Path::new(env!("CARGO_BIN_EXE_cs-user-management")),
            &[],
            iso.env(&settings),
            scratch.join(&format!("service-{port}-{attempt}.log")),
        );
        let app = TestApp::connect(format!("http://127.0.0.1:{port}"), iso).await;
        let live = wait_until_up(&mut server, || async {
            app.client
                .get(app.url("/health/live"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        if !live && server.has_exited() {
            continue; // its port was taken? try another
        }
        assert!(
            live,
            "the service did not answer /health/live\n{}",
            server.log_tail()
        );
        return (server, app);
    }
    panic!("the service process exited before answering /health/live");
}
