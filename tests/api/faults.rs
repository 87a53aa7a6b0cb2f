//! Faults as MongoDB's own driver tests inject them (SPEC 13), against a private SecantusDB
//! started with its test commands: `configureFailPoint failCommand` on one command of the
//! service at a time, then a `replSetStepDown`, under a registration and login load. What must
//! hold: every answer is a 2xx or a 503 with `Retry-After` (never a 500, never a hang); every
//! stored registration is whole (user, wallet, audit entry) and stored once; every acknowledged
//! login is stamped; full service is back within 2 s of the step-down's end.
//!
//! The failpoints are scoped to the service's `appName`, so the test's own reads are not hit.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson, Document};
use reqwest::StatusCode;

use crate::helpers::{
    assert_only, exchange, free_port, hang_detecting_client, login_request, mongo_client,
    needs_servers, poll_until, register_new_user, spawn_app_in, spawn_app_with, spawn_redis,
    start_secantus_with, summary, Backdoor, Exchange, Isolation, Load, ScratchDir, Server,
    PASSWORD,
};

/// The service's `appName` on MongoDB (what the failpoints are scoped to).
const APP_NAME: &str = "cs-user-management";

/// How long each failpoint stays armed under the load, and how many commands it fails.
const ARMED: Duration = Duration::from_millis(1500);
const TIMES: i32 = 3;

/// The step-down window, and how soon after it full service must be back (SPEC 13).
const STEP_DOWN: Duration = Duration::from_secs(6);
const RECOVERY: Duration = Duration::from_secs(2);

/// The faults of SPEC 13, one after another: the commands each fails, and how.
fn faults() -> Vec<(&'static str, Vec<&'static str>, Document)> {
    let transient = || vec![Bson::from("TransientTransactionError")];
    vec![
        (
            "WriteConflict 112, TransientTransactionError",
            vec!["insert"],
            doc! {"errorCode": 112, "errorLabels": transient()},
        ),
        (
            "PrimarySteppedDown 189",
            vec!["update"],
            doc! {"errorCode": 189},
        ),
        (
            "closeConnection",
            vec!["find"],
            doc! {"closeConnection": true},
        ),
        (
            "ShutdownInProgress 91",
            vec!["commitTransaction"],
            doc! {"errorCode": 91},
        ),
        (
            "NotWritablePrimary 10107",
            vec!["insert"],
            doc! {"errorCode": 10107},
        ),
        (
            "HostUnreachable 6",
            vec!["find", "aggregate"],
            doc! {"errorCode": 6},
        ),
        (
            "writeConcernError 64",
            vec!["insert", "update"],
            doc! {"writeConcernError": {"code": 64, "codeName": "WriteConcernFailed",
            "errmsg": "waiting for replication timed out"}},
        ),
        (
            "InterruptedAtShutdown 11600",
            vec!["update"],
            doc! {"errorCode": 11600},
        ),
        ("NetworkTimeout 89", vec!["find"], doc! {"errorCode": 89}),
        (
            "closeConnection on commit",
            vec!["commitTransaction"],
            doc! {"closeConnection": true},
        ),
    ]
}

/// How many times the fault schedule runs: once in CI, more in `scripts/chaos.sh`.
fn chaos_rounds() -> usize {
    std::env::var("CHAOS_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// The longest time between two successful answers, for the report.
fn longest_outage(stream: &[Exchange]) -> Duration {
    let mut successes: Vec<Instant> = stream
        .iter()
        .filter(|e| e.status().is_some_and(|s| s.is_success()))
        .map(|e| e.finished_at)
        .collect();
    successes.sort();
    successes
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default()
}

/// Arms `failCommand` for the service's next `TIMES` matching commands.
async fn arm(admin: &mongodb::Database, commands: &[&str], how: &Document) {
    let mut data = how.clone();
    data.insert("failCommands", commands.to_vec());
    data.insert("appName", APP_NAME);
    admin
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": TIMES},
            "data": data,
        })
        .await
        .expect("SecantusDB accepts configureFailPoint (started with --enable-test-commands)");
}

async fn disarm(admin: &mongodb::Database) {
    admin
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
        .expect("the failpoint is turned off");
}

fn id_of(doc: &Document, field: &str) -> Option<String> {
    match doc.get(field) {
        Some(Bson::ObjectId(id)) => Some(id.to_hex()),
        Some(Bson::String(id)) => Some(id.clone()),
        _ => None,
    }
}

/// Every stored user whose registration is not whole (no wallet, no `user.register` entry), and
/// every email stored more than once.
async fn half_written_or_duplicated(store: &Backdoor) -> Vec<String> {
    let users = store.find("users", doc! {}).await;
    let wallets: HashMap<String, usize> =
        store
            .find("wallets", doc! {})
            .await
            .iter()
            .fold(HashMap::new(), |mut owners, w| {
                if let Some(owner) = id_of(w, "user_id") {
                    *owners.entry(owner).or_default() += 1;
                }
                owners
            });
    let registered: HashMap<String, usize> = store
        .find("audit_log", doc! {"action": "user.register"})
        .await
        .iter()
        .fold(HashMap::new(), |mut seen, a| {
            if let Some(user) = id_of(a, "user_id") {
                *seen.entry(user).or_default() += 1;
            }
            seen
        });
    let mut emails = HashMap::<String, usize>::new();
    let mut problems = Vec::new();
    for user in &users {
        let id = id_of(user, "_id").unwrap_or_default();
        let email = user.get_str("email").unwrap_or_default().to_string();
        *emails.entry(email.clone()).or_default() += 1;
        if email.starts_with("f_") {
            continue; // the users the login load signs in were registered before any fault
        }
        match wallets.get(&id) {
            Some(1) => {}
            n => problems.push(format!("{email} ({id}): {n:?} wallets")),
        }
        match registered.get(&id) {
            Some(1) => {}
            n => problems.push(format!("{email} ({id}): {n:?} registration audit entries")),
        }
    }
    problems.extend(
        emails
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(email, n)| format!("{email}: stored {n} times")),
    );
    problems
}

#[actix_web::test]
async fn mongodb_failpoints_and_a_step_down_under_load_give_only_2xx_or_503_and_no_half_written_registration(
) {
    if !needs_servers("it arms failpoints on a private SecantusDB") {
        return;
    }
    // Arrange: a private SecantusDB with its test commands, the service on it as a replica
    // set's client (no directConnection), users to sign in, and the load.
    let scratch = ScratchDir::new("faults");
    let port = free_port();
    let _mongo = start_secantus_with(
        port,
        &scratch.join("data"),
        &["--enable-test-commands"],
        &scratch,
    )
    .await;
    let db_name = format!(
        "faults_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let uri = format!("mongodb://127.0.0.1:{port}/{db_name}?serverSelectionTimeoutMS=2000");
    let app = spawn_app_with(&[
        ("MONGODB_URI", uri.as_str()),
        ("MONGODB_SERVER_SELECTION_TIMEOUT_MS", "2000"),
        ("PROBE_INTERVAL_MS", "200"),
    ])
    .await;
    let admin = mongo_client(port, 2000).await.database("admin");
    let store = Backdoor::Mongo(mongo_client(port, 5000).await.database(&db_name));
    let mut signers = Vec::new();
    for n in 0..4 {
        let email = format!("f_{n}_{}@example.com", &db_name[7..]);
        let response = app
            .register(&format!("f_{n}_{}", &db_name[7..]), &email, PASSWORD)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{email} registers");
        signers.push(email);
    }
    let client = hang_detecting_client();
    let mut load = Load::new();
    for email in &signers {
        let (registrar, base) = (client.clone(), app.address.clone());
        load.add(move || {
            let (client, base) = (registrar.clone(), base.clone());
            async move { register_new_user(&client, &base).await }
        });
        let (client, base, email) = (client.clone(), app.address.clone(), email.clone());
        load.add(move || {
            let request = login_request(&client, &base, &email);
            exchange(format!("POST /auth/login {email}"), request)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Act: each failpoint in turn, then a step-down, then the time full service must be back in
    // (once; `CHAOS_ROUNDS` times in the long form, `scripts/chaos.sh`).
    let (mut windows, mut calm, mut told_why) = (Vec::new(), Vec::new(), false);
    for _ in 0..chaos_rounds() {
        for (_, commands, how) in faults() {
            arm(&admin, &commands, &how).await;
            tokio::time::sleep(ARMED).await;
        }
        disarm(&admin).await;
        admin
            .run_command(doc! {"replSetStepDown": STEP_DOWN.as_secs() as i64, "force": true})
            .await
            .expect("SecantusDB steps down");
        let stepped_down_at = Instant::now();
        let back_by = stepped_down_at + STEP_DOWN + RECOVERY;
        told_why |= poll_until(STEP_DOWN / 2, || async {
            let health = app.client.get(app.url("/health")).send().await;
            match health {
                Ok(r) => r
                    .text()
                    .await
                    .is_ok_and(|t| t.contains("no writable primary")),
                Err(_) => false,
            }
        })
        .await;
        tokio::time::sleep_until((back_by + Duration::from_secs(3)).into()).await;
        windows.push((stepped_down_at, stepped_down_at + STEP_DOWN));
        calm.push((back_by, Instant::now()));
    }
    let stream = load.finish().await;

    // Assert
    println!("mongodb faults: {}", summary(&stream));
    println!(
        "  longest outage (no request succeeded): {:?}",
        longest_outage(&stream)
    );
    assert_only(
        &stream,
        &[
            StatusCode::OK,
            StatusCode::CREATED,
            StatusCode::SERVICE_UNAVAILABLE,
        ],
    );
    let in_window = |e: &Exchange| {
        windows
            .iter()
            .any(|(from, to)| e.sent_at > *from && e.finished_at < *to)
    };
    assert!(
        stream
            .iter()
            .any(|e| in_window(e) && e.status() == Some(StatusCode::SERVICE_UNAVAILABLE)),
        "writes get 503 while the server is stepped down"
    );
    let late: Vec<String> = stream
        .iter()
        .filter(|e| {
            // Sent after recovery and answered before the next round's first failpoint.
            calm.iter()
                .any(|(from, to)| e.sent_at >= *from && e.finished_at < *to)
        })
        .filter(|e| !e.status().is_some_and(|s| s.is_success()))
        .map(|e| {
            let body = e.outcome.as_ref().map_or("", |r| r.body.as_str());
            let answered_in = e.finished_at - e.sent_at;
            format!("{} {:?} in {answered_in:?}: {body}", e.label, e.status())
        })
        .collect();
    assert!(
        late.is_empty(),
        "{} requests sent 2 s or more after a step-down's end still failed:\n{}",
        late.len(),
        late.join("\n")
    );
    assert!(
        told_why,
        "/health says there is no writable primary during the step-down"
    );
    let problems = half_written_or_duplicated(&store).await;
    assert!(
        problems.is_empty(),
        "registrations half written or duplicated:\n{}",
        problems.join("\n")
    );
    let acknowledged: Vec<String> = stream.iter().filter_map(Exchange::registered_id).collect();
    let stored = store.find("users", doc! {}).await;
    let stored_ids: Vec<String> = stored.iter().filter_map(|u| id_of(u, "_id")).collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored_ids.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged registrations lost: {lost:?}");
    let logins = |status: StatusCode| {
        stream
            .iter()
            .filter(|e| e.label.starts_with("POST /auth/login") && e.status() == Some(status))
            .count() as i64
    };
    let (signed_in, refused) = (
        logins(StatusCode::OK),
        logins(StatusCode::SERVICE_UNAVAILABLE),
    );
    let stamped: i64 = stored
        .iter()
        .filter(|u| u.get_str("email").is_ok_and(|e| e.starts_with("f_")))
        .map(|u| match u.get("login_count") {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => i64::from(*n),
            _ => 0,
        })
        .sum();
    println!(
        "  logins: {signed_in} answered 200, {refused} answered 503, {stamped} stamps stored; \
         registrations acknowledged: {}",
        acknowledged.len()
    );
    assert!(
        stamped >= signed_in && stamped <= signed_in + refused,
        "every login answered 200 is stamped once ({signed_in} 200s, {refused} 503s, \
         {stamped} stamps)"
    );
}

// ---------------------------------------------------------------------------------------------
// A Redis Cluster failover
// ---------------------------------------------------------------------------------------------

/// The cluster's node timeout: how long a primary may be silent before its replica takes over.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// A port whose cluster bus port (+10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let port = 20000 + rand::random_range(0..25000_u16);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !taken.contains(&port) && free(port) && free(port + 10000) {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

/// What `redis-cli -p port args…` printed.
async fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .await
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Six nodes (three primaries, a replica each), node timeout [`NODE_TIMEOUT`], in `scratch`,
/// every slot served and every replica in sync.
async fn start_cluster_with_replicas(scratch: &ScratchDir) -> (Vec<Server>, Vec<u16>) {
    let mut ports = Vec::new();
    while ports.len() < 6 {
        let port = free_cluster_port(&ports);
        ports.push(port);
    }
    let timeout_ms = NODE_TIMEOUT.as_millis().to_string();
    let mut servers = Vec::new();
    for port in &ports {
        let conf = format!("nodes-{port}.conf");
        let cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            "--cluster-node-timeout",
            &timeout_ms,
        ];
        let server = spawn_redis("redis-server (cluster node)", *port, &cluster, scratch);
        servers.push(server);
    }
    for port in &ports {
        let up = poll_until(Duration::from_secs(30), || async {
            redis_cli(*port, &["ping"]).await.contains("PONG")
        })
        .await;
        assert!(up, "cluster node {port} answers");
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = tokio::process::Command::new("redis-cli");
    create.arg("--cluster").arg("create").args(&nodes).args([
        "--cluster-replicas",
        "1",
        "--cluster-yes",
    ]);
    let created = tokio::time::timeout(Duration::from_secs(60), create.output())
        .await
        .expect("redis-cli --cluster create finishes")
        .expect("redis-cli runs");
    assert!(
        created.status.success(),
        "the cluster is created: {}",
        String::from_utf8_lossy(&created.stdout)
    );
    let ready = poll_until(Duration::from_secs(60), || async {
        let mut all = true;
        for port in &ports {
            let info = redis_cli(*port, &["cluster", "info"]).await;
            let replication = redis_cli(*port, &["info", "replication"]).await;
            all &= info.contains("cluster_state:ok")
                && (replication.contains("role:master")
                    && replication.contains("connected_slaves:1")
                    || replication.contains("master_link_status:up"));
        }
        all
    })
    .await;
    assert!(ready, "every slot is served and every replica is in sync");
    (servers, ports)
}

/// The primary of the slot `key` hashes to, by port.
async fn primary_of(any: u16, key: &str) -> u16 {
    let slot = redis_cli(any, &["cluster", "keyslot", key]).await;
    let slot: u16 = slot.trim().parse().expect("a slot number");
    // `cluster nodes`: id addr flags master ping pong epoch state slots…
    let nodes = redis_cli(any, &["cluster", "nodes"]).await;
    nodes
        .lines()
        .filter(|line| line.contains("master") && !line.contains("fail"))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port: u16 = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
            let serves = fields[8..].iter().any(|range| {
                let mut ends = range.split('-').filter_map(|n| n.parse::<u16>().ok());
                match (ends.next(), ends.next()) {
                    (Some(a), Some(b)) => (a..=b).contains(&slot),
                    (Some(a), None) => a == slot,
                    _ => false,
                }
            });
            serves.then_some(port)
        })
        .expect("a primary serves every slot")
}

#[actix_web::test]
async fn a_redis_cluster_primary_killed_under_login_load_is_followed_to_its_replica_and_revocations_hold(
) {
    if !needs_servers("it kills a node of a private Redis Cluster") {
        return;
    }
    // Arrange: a private cluster with replicas, the service on it, users signing in, and
    // sessions ended (logged out) just before the kill.
    let scratch = ScratchDir::new("failover");
    // Ends of sessions wait for one replica; the chaos script also measures them without.
    let wait_replicas = std::env::var("CHAOS_REDIS_WAIT_REPLICAS").unwrap_or_else(|_| "1".into());
    let (mut nodes, ports) = start_cluster_with_replicas(&scratch).await;
    let list: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let list = list.join(",");
    let iso = Isolation::new();
    let app = spawn_app_in(
        &iso,
        &[
            ("REDIS_CLUSTER_NODES", list.as_str()),
            ("REDIS_TIMEOUT_MS", "1000"),
            ("REDIS_WAIT_REPLICAS", wait_replicas.as_str()),
        ],
    )
    .await;
    // Users 0..6 sign in under the load; 6..12 (untouched by it) end their sessions.
    let (mut signers, mut ids) = (Vec::new(), Vec::new());
    for n in 0..12 {
        let email = format!("c_{n}_{}@example.com", &iso.db_name[5..]);
        let response = app
            .register(&format!("c_{n}_{}", &iso.db_name[5..]), &email, PASSWORD)
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{email} registers");
        let body: serde_json::Value = response.json().await.unwrap();
        ids.push(body["data"]["user"]["_id"].as_str().unwrap().to_string());
        signers.push(email);
    }
    let client = hang_detecting_client();
    let mut load = Load::new();
    let (signers, enders) = signers.split_at(6);
    for email in signers {
        let (client, base, email) = (client.clone(), app.address.clone(), email.clone());
        load.add(move || {
            let request = login_request(&client, &base, &email);
            exchange(format!("POST /auth/login {email}"), request)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut ended, mut ending) = (Vec::new(), Duration::ZERO);
    for email in enders {
        let (access, _) = app.tokens_for(email).await;
        let started = Instant::now();
        assert_eq!(app.logout(&access).await.status(), StatusCode::OK);
        ending += started.elapsed();
        ended.push(access);
    }
    println!(
        "  a logout under the load, waiting for {wait_replicas} replica(s): {:?} on average",
        ending / enders.len() as u32
    );

    // Act: SIGKILL the primary holding the last ended user's sessions (their keys share the
    // user's hash tag), right after the logouts.
    let victim = primary_of(ports[0], &format!("{{{}}}", ids[11])).await;
    let index = ports
        .iter()
        .position(|p| *p == victim)
        .expect("a node of ours");
    nodes[index].kill().await;
    let killed_at = Instant::now();
    let back_by = killed_at + NODE_TIMEOUT + RECOVERY;
    tokio::time::sleep_until((back_by + Duration::from_secs(3)).into()).await;
    let stream = load.finish().await;

    // Assert
    println!("redis cluster failover: {}", summary(&stream));
    println!(
        "  longest outage (no request succeeded): {:?}",
        longest_outage(&stream)
    );
    assert_only(&stream, &[StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]);
    let late: Vec<String> = stream
        .iter()
        .filter(|e| e.sent_at >= back_by && e.status() != Some(StatusCode::OK))
        .map(|e| {
            let body = e.outcome.as_ref().map_or("", |r| r.body.as_str());
            let sent = e.sent_at - killed_at;
            format!(
                "{} {:?}, sent {sent:?} after the kill: {body}",
                e.label,
                e.status()
            )
        })
        .collect();
    assert!(
        late.is_empty(),
        "{} logins sent {:?} or more after the kill still failed:\n{}",
        late.len(),
        NODE_TIMEOUT + RECOVERY,
        late.join("\n")
    );
    let outage = stream
        .iter()
        .filter(|e| e.sent_at >= killed_at && e.status() != Some(StatusCode::OK))
        .map(|e| e.finished_at - killed_at)
        .max()
        .unwrap_or_default();
    println!("  last failed login answered {outage:?} after the kill");
    for (email, access) in enders.iter().zip(&ended) {
        let status = app.me(access).await.status();
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{email}'s session, ended just before the kill, stays ended after the failover"
        );
    }
}
