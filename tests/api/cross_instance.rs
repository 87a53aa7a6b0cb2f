//! Two service processes sharing one MongoDB database and one Redis prefix: revocations,
//! session limits and the failed-login lockout hold across them.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{assert_error, assert_unauthorized, free_port, Isolation, TestApp, PASSWORD};

/// How long a service process may take to answer `/health/live`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running service process; killed when dropped, so a failing test leaves none behind.
pub struct ServiceProcess {
    pub child: Child,
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary against `iso` and waits until it answers `/health/live`.
async fn start_instance(iso: &Isolation) -> (ServiceProcess, TestApp) {
    start_instance_with(iso, &[], None).await
}

/// The same, with extra settings, its log (standard output and error) written to `log` if
/// given.
pub async fn start_instance_with(
    iso: &Isolation,
    overrides: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> (ServiceProcess, TestApp) {
    // The port is free when picked but may be taken before the child binds it: try again then.
    for _ in 0..3 {
        let port = free_port().to_string();
        let mut env = iso.env(overrides);
        env.insert("PORT".into(), port.clone());
        let output = || match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_cs-user-management"))
            .envs(env)
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .spawn()
            .expect("the service binary starts");
        let mut process = ServiceProcess { child };
        let app = TestApp::connect(format!("http://127.0.0.1:{port}"), iso).await;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if process.child.try_wait().unwrap().is_some() {
                break; // exited (its port was taken?): try another port
            }
            assert!(
                Instant::now() < deadline,
                "the service process did not answer /health/live within {START_TIMEOUT:?}"
            );
            let live = app
                .client
                .get(app.url("/health/live"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if live.is_ok_and(|r| r.status() == StatusCode::OK) {
                return (process, app);
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("the service process exited before answering /health/live");
}

/// Two instances, A and B, sharing one database and one Redis prefix.
async fn start_pair() -> ([ServiceProcess; 2], TestApp, TestApp) {
    let iso = Isolation::new();
    let (process_a, a) = start_instance(&iso).await;
    let (process_b, b) = start_instance(&iso).await;
    ([process_a, process_b], a, b)
}

#[actix_web::test]
async fn a_logout_on_one_instance_ends_the_token_on_the_other() {
    let (_processes, a, b) = start_pair().await;
    let (_, _, access, _) = a.signed_in_user().await;
    assert_eq!(b.me(&access).await.status(), StatusCode::OK);

    assert_eq!(a.logout(&access).await.status(), StatusCode::OK);

    let message = assert_unauthorized(b.me(&access).await).await;
    assert!(message.to_lowercase().contains("logout"), "{message}");
}

#[actix_web::test]
async fn a_login_on_another_instance_evicts_the_session_everywhere() {
    let (_processes, a, b) = start_pair().await;
    let (email, _, first, _) = a.signed_in_user().await;

    let (second, _) = b.tokens_for(&email).await;

    for instance in [&a, &b] {
        let message = assert_unauthorized(instance.me(&first).await).await;
        assert!(
            message.to_lowercase().contains("newer sign-in"),
            "{message}"
        );
        assert_eq!(instance.me(&second).await.status(), StatusCode::OK);
    }
}

#[actix_web::test]
async fn failed_logins_count_across_instances_towards_the_lockout() {
    let (_processes, a, b) = start_pair().await;
    let (email, _) = a.create_user().await;
    for instance in [&a, &a, &a, &b, &b] {
        assert_unauthorized(instance.login(&email, "wrong-password-1").await).await;
    }

    let response = a.login(&email, PASSWORD).await;

    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_error(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "Retry-After is a positive number of seconds: {retry_after:?}"
    );
}
