//! Sharing one database with the seed's Python service: password hashes each side can verify,
//! and users and wallets the seed wrote work here.
use std::process::Command;
use std::time::Duration;

use futures::TryStreamExt;

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    needs_servers, poll_until, ready_status, spawn_app, spawn_app_in, start_service, Isolation,
    ScratchDir, TestApp, PASSWORD,
};

/// The Python interpreter with `bcrypt` installed: `TEST_PYTHON`, else the repo's `.venv`.
pub(crate) fn python() -> String {
    std::env::var("TEST_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")))
}

/// Whether Python's `bcrypt.checkpw` accepts `password` for `hash`.
fn python_checkpw(password: &str, hash: &str) -> bool {
    let status = Command::new(python())
        .args([
            "-c",
            "import bcrypt,sys; \
             sys.exit(0 if bcrypt.checkpw(sys.argv[1].encode(), sys.argv[2].encode()) else 1)",
            password,
            hash,
        ])
        .status()
        .expect("TEST_PYTHON runs");
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("python bcrypt check failed to run: {other:?}"),
    }
}

/// A hash made the way the seed's service made them (its default cost is 12).
fn python_hashpw(password: &str) -> String {
    python_hashpw_at(password, 4)
}

fn python_hashpw_at(password: &str, cost: u32) -> String {
    let output = Command::new(python())
        .args([
            "-c",
            "import bcrypt,sys; \
             print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=int(sys.argv[2]))).decode())",
            password,
            &cost.to_string(),
        ])
        .output()
        .expect("TEST_PYTHON runs");
    assert!(output.status.success(), "python bcrypt.hashpw failed");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The password hash stored for the user with this email.
async fn stored_hash(app: &TestApp, email: &str) -> String {
    let stored = app
        .store
        .find_one("users", doc! {"email": email})
        .await
        .unwrap();
    stored.get_str("password_hash").unwrap().to_string()
}

#[actix_web::test]
async fn a_stored_password_hash_is_bcrypt_2b_that_python_verifies() {
    let app = spawn_app().await;
    let (email, _) = app.create_user().await;

    let hash = stored_hash(&app, &email).await;

    assert!(hash.starts_with("$2b$"), "{hash}");
    assert!(python_checkpw(PASSWORD, &hash));
    assert!(!python_checkpw("not-the-password", &hash));
}

/// Python's `bcrypt` hash of `password` with the given prefix (`2a` or `2b`).
fn python_hashpw_prefixed(password: &str, prefix: &str) -> String {
    let output = Command::new(python())
        .args([
            "-c",
            "import bcrypt,sys; \
             print(bcrypt.hashpw(sys.argv[1].encode(), \
                   bcrypt.gensalt(rounds=4, prefix=sys.argv[2].encode())).decode())",
            password,
            prefix,
        ])
        .output()
        .expect("TEST_PYTHON runs");
    assert!(output.status.success(), "python bcrypt.hashpw failed");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Passwords where bcrypt implementations have been known to part ways: 8-bit bytes (the old
/// `$2a$` sign-extension bug), 71 bytes (the terminating NUL is the last key byte) and 72 bytes
/// (no NUL at all).
fn edge_passwords() -> Vec<String> {
    vec![
        "pässwörd-ÿÿÿ-\u{1F511}-über".to_string(),
        // 71 and 72 bytes.
        format!("{}é", "a".repeat(69)),
        format!("{}ÿ", "b".repeat(70)),
    ]
}

#[actix_web::test]
async fn bcrypt_hashes_agree_with_python_on_8_bit_and_full_length_passwords() {
    // On MongoDB, a database the seed's module uses (its indexes), which writes users beside us.
    let iso = Isolation::new();
    if !crate::helpers::embedded() {
        seed_database(&iso, &[]).await;
    }
    let app = spawn_app_in(&iso, &[]).await;
    for (n, password) in edge_passwords().into_iter().enumerate() {
        // The same length, another first byte: a wrong password bcrypt cannot truncate away.
        let wrong_password = format!("x{}", &password[1..]);
        // Ours, read by Python.
        let email = format!("edge{n}_{}@example.com", &ObjectId::new().to_hex()[16..]);
        let username = format!("edge{n}_{}", &ObjectId::new().to_hex()[16..]);
        let response = app.register(&username, &email, &password).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{password}");
        let hash = stored_hash(&app, &email).await;
        assert!(python_checkpw(&password, &hash), "{password} {hash}");
        assert!(!python_checkpw(&wrong_password, &hash));
        assert_eq!(app.login(&email, &password).await.status(), StatusCode::OK);

        // Python's, `$2a$` and `$2b$`, read by us.
        if !needs_servers("the seed's users are MongoDB documents") {
            continue;
        }
        for prefix in ["2a", "2b"] {
            let hash = python_hashpw_prefixed(&password, prefix);
            assert!(hash.starts_with(&format!("${prefix}$")), "{hash}");
            let id = ObjectId::new();
            let email = format!("py{prefix}{n}_{}@example.com", &id.to_hex()[16..]);
            let mut user = seed_user(
                &email,
                &format!("py{prefix}{n}_{}", &id.to_hex()[16..]),
                &hash,
            );
            user.insert("_id", id);
            app.store
                .mongo()
                .collection::<Document>("users")
                .insert_one(user)
                .await
                .unwrap();
            let wrong = app.login(&email, &wrong_password).await.status();
            assert_eq!(wrong, StatusCode::UNAUTHORIZED, "{prefix} {password}");
            let right = app.login(&email, &password).await.status();
            assert_eq!(right, StatusCode::OK, "{prefix} {password}");
        }
    }
}

#[actix_web::test]
async fn a_user_and_wallet_written_by_the_seed_service_can_log_in_and_see_the_wallet() {
    if !needs_servers("the seed's data is MongoDB documents") {
        return;
    }
    let iso = Isolation::new();
    seed_database(&iso, &[]).await;
    let app = spawn_app_in(&iso, &[]).await;
    let id = ObjectId::new();
    let email = format!("seed_{}@example.com", &id.to_hex()[16..]);
    let now = DateTime::now();
    let db = app.store.mongo();
    db.collection::<Document>("users")
        .insert_one(doc! {
            "_id": id,
            "email": &email,
            "username": format!("Seed_{}", &id.to_hex()[16..]),
            "password_hash": python_hashpw(PASSWORD),
            "status": "active",
            "created_at": now,
            "updated_at": now,
        })
        .await
        .unwrap();
    db.collection::<Document>("wallets")
        .insert_one(doc! {"user_id": id.to_hex(), "balance": 1500, "currency": "credits"})
        .await
        .unwrap();

    let login = app.login(&email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let login: Value = login.json().await.unwrap();
    let access = login["data"]["access_token"].as_str().unwrap();
    let me = app.me(access).await;

    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    let (user, wallet) = (&me["data"]["user"], &me["data"]["wallet"]);
    assert_eq!(user["_id"], id.to_hex().as_str());
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["role"], "user");
    assert_eq!(user["status"], "active");
    assert_eq!(user["login_count"], 1);
    assert_eq!(wallet["user_id"], id.to_hex().as_str());
    assert_eq!(wallet["balance"], 1500);
    assert_eq!(wallet["currency"], "credits");
}

/// A database as the seed's Python module leaves it: its indexes under their default names,
/// and the given users (with wallets) as it stores them.
async fn seed_database(iso: &Isolation, users: &[Document]) -> mongodb::Database {
    let app = TestApp::connect(String::new(), iso).await;
    let db = app.store.mongo().clone();
    let users_collection = db.collection::<Document>("users");
    let index = |keys: Document, unique: bool| {
        mongodb::IndexModel::builder()
            .keys(keys)
            .options(
                mongodb::options::IndexOptions::builder()
                    .unique(unique.then_some(true))
                    .build(),
            )
            .build()
    };
    users_collection
        .create_indexes([
            index(doc! {"email": 1}, true),
            index(doc! {"username": 1}, false),
            index(doc! {"status": 1}, false),
            index(doc! {"created_at": 1}, false),
        ])
        .await
        .unwrap();
    for user in users {
        users_collection.insert_one(user).await.unwrap();
        let id = user.get_object_id("_id").unwrap().to_hex();
        db.collection::<Document>("wallets")
            .insert_one(doc! {"user_id": id, "balance": 250, "currency": "credits",
            "status": "active", "created_at": "2024-01-15T10:30:00"})
            .await
            .unwrap();
    }
    db
}

/// A user as the seed stores one: the email as typed, string dates, no role, no login count,
/// no lower-cased username.
fn seed_user(email: &str, username: &str, hash: &str) -> Document {
    doc! {
        "_id": ObjectId::new(),
        "email": email,
        "username": username,
        "password_hash": hash,
        "status": "active",
        "created_at": "2024-01-15T10:30:00",
        "updated_at": "2024-01-15T10:30:00",
    }
}

async fn index_names(db: &mongodb::Database, collection: &str) -> Vec<String> {
    let mut names = db
        .collection::<Document>(collection)
        .list_index_names()
        .await
        .unwrap();
    names.sort();
    names
}

#[actix_web::test]
async fn the_service_takes_over_a_database_the_seed_module_has_been_using() {
    if !needs_servers("the seed's database is MongoDB") {
        return;
    }
    let iso = Isolation::new();
    let hash = python_hashpw_at(PASSWORD, 12);
    let tag = &ObjectId::new().to_hex()[16..];
    let email = format!("Ada.Lovelace.{tag}@Example.COM");
    let username = format!("Ada_{tag}");
    let db = seed_database(&iso, &[seed_user(&email, &username, &hash)]).await;
    let indexes_before = index_names(&db, "users").await;
    let dry_run = crate::cli::run(&["migrate", "--dry-run"], &iso.env(&[]));
    let said = String::from_utf8_lossy(&dry_run.stdout);
    assert!(dry_run.status.success(), "{said}");
    assert!(
        said.contains("would adopt index users.status_1 as users.status"),
        "{said}"
    );
    for step in [
        "would write the email key (SPEC 10) onto 1 users",
        "would create index users.email_key_unique",
    ] {
        assert!(said.contains(step), "{said}");
    }
    assert_eq!(index_names(&db, "users").await, indexes_before);

    let app = spawn_app_in(&iso, &[]).await;

    // The seed's indexes are still there (the seed's module may keep running beside us).
    let names = index_names(&db, "users").await;
    for seed_index in ["email_1", "username_1", "status_1", "created_at_1"] {
        assert!(names.contains(&seed_index.to_string()), "{names:?}");
    }
    for typed in [email.clone(), email.to_lowercase(), email.to_uppercase()] {
        let login = app.login(&typed, PASSWORD).await;
        assert_eq!(login.status(), StatusCode::OK, "{typed}");
        let body: Value = login.json().await.unwrap();
        let access = body["data"]["access_token"].as_str().unwrap();
        let me: Value = app.me(access).await.json().await.unwrap();
        assert_eq!(me["data"]["user"]["email"], email.as_str());
        assert_eq!(me["data"]["user"]["role"], "user");
        assert_eq!(me["data"]["wallet"]["balance"], 250);
    }
    let variant_email = app
        .register(&format!("other_{tag}"), &email.to_lowercase(), PASSWORD)
        .await;
    assert_eq!(variant_email.status(), StatusCode::CONFLICT);
    let variant_name = app
        .register(
            &username.to_lowercase(),
            &format!("other_{tag}@example.com"),
            PASSWORD,
        )
        .await;
    assert_eq!(variant_name.status(), StatusCode::CONFLICT);
    // Its document keeps the email as the seed typed it, with its key beside it.
    let stored = db
        .collection::<Document>("users")
        .find_one(doc! {"username": &username})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("email").unwrap(), email);
    assert_eq!(
        stored.get_str("email_key").unwrap(),
        email.to_lowercase().as_str()
    );
}

#[actix_web::test]
async fn start_up_refuses_emails_of_one_key_and_changes_nothing() {
    if !needs_servers("the seed's database is MongoDB") {
        return;
    }
    let iso = Isolation::new();
    let hash = python_hashpw(PASSWORD);
    // The seed compares emails as typed: these are two of its accounts, one of ours.
    let (sam, other) = (
        seed_user("Sam.Ross@x.io", "Sam", &hash),
        seed_user("\u{17F}am.ro\u{DF}@x.io", "Sam2", &hash),
    );
    let db = seed_database(&iso, &[sam.clone(), other.clone()]).await;
    let indexes_before = index_names(&db, "users").await;
    let dry_run = crate::cli::run(&["migrate", "--dry-run"], &iso.env(&[]));
    let said = String::from_utf8_lossy(&dry_run.stdout);
    assert!(!dry_run.status.success(), "{said}");
    assert!(said.contains("emails that are one account"), "{said}");

    let message = start_up_refusal(&iso, &db, &[&sam, &other]).await;

    assert!(message.contains("one key"), "{message}");
    assert_eq!(index_names(&db, "users").await, indexes_before);
}

#[actix_web::test]
async fn a_user_the_seed_writes_while_the_service_runs_is_one_account_with_its_spellings() {
    if !needs_servers("the seed's database is MongoDB") {
        return;
    }
    // A database the seed's module uses (its `email_1` index), which goes on writing beside us.
    let iso = Isolation::new();
    seed_database(&iso, &[]).await;
    let app = spawn_app_in(&iso, &[]).await;
    let tag = &ObjectId::new().to_hex()[16..];
    // As the seed stores an address typed in lower case: no key.
    let email = format!("sam.ross.{tag}@x.io");
    let seeded = seed_user(&email, &format!("Sam_{tag}"), &python_hashpw(PASSWORD));
    let users = app.store.mongo().collection::<Document>("users");
    users.insert_one(&seeded).await.unwrap();

    // Another spelling registered through the service is the same account: 409.
    let spelling = format!("\u{17F}am.ro\u{DF}.{tag}@x.io");
    let again = app
        .register(&format!("other_{tag}"), &spelling, PASSWORD)
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    // Met, and keyed: every spelling logs into it.
    let login = app.login(&spelling, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let body: Value = login.json().await.unwrap();
    let id = seeded.get_object_id("_id").unwrap().to_hex();
    assert_eq!(body["data"]["user"]["_id"], id.as_str());
    let stored = users
        .find_one(doc! {"_id": seeded.get_object_id("_id").unwrap()})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("email_key").unwrap(), email.as_str());

    // Stored in mixed case, as typed into the seed's module: found however it is spelled.
    let mixed = format!("Ada.King.{tag}@X.io");
    let ada = seed_user(&mixed, &format!("Ada_{tag}"), &python_hashpw(PASSWORD));
    users.insert_one(&ada).await.unwrap();
    let lower = app
        .register(&format!("ada2_{tag}"), &mixed.to_lowercase(), PASSWORD)
        .await;
    assert_eq!(lower.status(), StatusCode::CONFLICT);
    let login = app.login(&mixed.to_uppercase(), PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);

    // The seed's module changes a keyed user's email: the new one logs in.
    let renamed = format!("sam.new.{tag}@x.io");
    users
        .update_one(
            doc! {"_id": seeded.get_object_id("_id").unwrap()},
            doc! {"$set": {"email": &renamed}},
        )
        .await
        .unwrap();
    let login = app.login(&renamed, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
}

#[actix_web::test]
async fn start_up_refuses_usernames_equal_but_for_case_and_changes_nothing() {
    if !needs_servers("the seed's database is MongoDB") {
        return;
    }
    let iso = Isolation::new();
    let hash = python_hashpw(PASSWORD);
    let (grace, other) = (
        seed_user("grace@example.com", "Grace", &hash),
        seed_user("hopper@example.com", "grace", &hash),
    );
    let db = seed_database(&iso, &[grace.clone(), other.clone()]).await;
    let indexes_before = index_names(&db, "users").await;
    let dry_run = crate::cli::run(&["migrate", "--dry-run"], &iso.env(&[]));
    let said = String::from_utf8_lossy(&dry_run.stdout);
    assert!(!dry_run.status.success(), "{said}");
    assert!(
        said.contains("cannot proceed: usernames equal but for case"),
        "{said}"
    );

    let message = start_up_refusal(&iso, &db, &[&grace, &other]).await;

    assert!(
        message.contains("\"Grace\"") && message.contains("\"grace\""),
        "{message}"
    );
    assert_eq!(index_names(&db, "users").await, indexes_before);
}

/// Start-up on `iso`'s database fails with one line naming the id of each of `users`, and
/// leaves them as they were; the line.
async fn start_up_refusal(iso: &Isolation, db: &mongodb::Database, users: &[&Document]) -> String {
    let settings = cs_user_management::configuration::Settings::load_from(&iso.env(&[])).unwrap();
    let refused = cs_user_management::startup::Application::build(settings).await;

    let Err(e) = refused else {
        panic!("the service started on accounts it must keep apart")
    };
    let message = e.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    for user in users {
        let id = user.get_object_id("_id").unwrap().to_hex();
        assert!(message.contains(&id), "{message}");
    }
    let stored: Vec<Document> = db
        .collection::<Document>("users")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stored.len(), users.len());
    assert!(users.iter().all(|u| stored.contains(u)), "nothing changed");
    message
}

#[actix_web::test]
async fn on_a_seed_shaped_database_every_spelling_is_the_seeds_account_with_one_budget() {
    if !needs_servers("the seed's database is MongoDB") {
        return;
    }
    let iso = Isolation::new();
    let tag = &ObjectId::new().to_hex()[16..];
    // As the seed stores it: as typed, mixed case, no key.
    let kasper = seed_user(
        &format!("Kasper.Ross.{tag}@Example.com"),
        &format!("Kasper_{tag}"),
        &python_hashpw(PASSWORD),
    );
    seed_database(&iso, std::slice::from_ref(&kasper)).await;
    let app = spawn_app_in(&iso, &[("LOGIN_MAX_FAILURES", "3")]).await;
    let id = kasper.get_object_id("_id").unwrap().to_hex();
    let spellings = crate::identity::spellings_of_kasper(tag);

    for (n, spelling) in spellings.iter().enumerate() {
        let again = app
            .register(&format!("k{n}_{tag}"), spelling, PASSWORD)
            .await;
        assert_eq!(again.status(), StatusCode::CONFLICT, "{spelling}");
        let login = app.login(spelling, PASSWORD).await;
        assert_eq!(login.status(), StatusCode::OK, "{spelling}");
        let body: Value = login.json().await.unwrap();
        assert_eq!(body["data"]["user"]["_id"], id.as_str(), "{spelling}");
    }
    for spelling in spellings.iter().take(3) {
        let guess = app.login(spelling, "wrong-pass-1").await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED, "{spelling}");
    }
    for spelling in &spellings {
        let right = app.login(spelling, PASSWORD).await;
        assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS, "{spelling}");
    }
}

/// Taking over a database reads every user once (which lack an email key, which clash) and
/// builds the indexes over them: work that grows with the data. It is not held to one
/// operation's deadline (`MONGODB_OP_TIMEOUT_MS`), which it used to time out against for ever
/// (100,000 users on SecantusDB on a slow host): with that deadline far below the work, the
/// service still becomes ready, every user keyed.
#[actix_web::test]
async fn a_database_whose_preparation_outlasts_one_operations_deadline_is_still_taken_over() {
    if !needs_servers("the seed's database is MongoDB") {
        return;
    }
    // Arrange: a seed database of 5,000 users (no email key, no search keys).
    let iso = Isolation::new();
    let db = seed_database(&iso, &[]).await;
    let users: Vec<Document> = (0..5000)
        .map(|i| {
            seed_user(
                &format!("Bulk.{i}@Example.com"),
                &format!("bulk_{i}"),
                "$2b$04$invalidinvalidinvalidinvalidinvalidinvalidinvalidinva",
            )
        })
        .collect();
    let collection = db.collection::<Document>("users");
    for chunk in users.chunks(1000) {
        collection.insert_many(chunk).await.unwrap();
    }
    let scratch = ScratchDir::new("prepare-long");

    // Act: the binary, each operation allowed 40 ms (reading 5,000 users takes longer).
    let (_service, app) = start_service(&iso, &[("MONGODB_OP_TIMEOUT_MS", "40")], &scratch).await;

    // Assert
    let client = reqwest::Client::new();
    assert!(
        poll_until(Duration::from_secs(120), || async {
            ready_status(&client, &app.address).await == Some(StatusCode::OK)
        })
        .await,
        "ready once the preparation, however long, is done"
    );
    let keyed = collection
        .count_documents(doc! {"email_key": {"$exists": true}})
        .await
        .unwrap();
    assert_eq!(keyed, 5000);
}
