//! Tokens other services check (SPEC 11): EdDSA and ES256 tokens verified by a stock verifier of
//! another ecosystem (PyJWT's `PyJWKClient`) from `/.well-known/jwks.json` alone, through a
//! rotation and after it; introspection (RFC 7662) for a client of `INTROSPECTION_CLIENTS`.
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::compat::python;
use crate::helpers::{
    assert_error, jwt_part, spawn_app, spawn_app_in, spawn_app_with, Isolation, TestApp, PASSWORD,
    TEST_SECRET,
};

const ISSUER: &str = "cs-user-management";
const AUDIENCE: &str = "cs-user-management";

/// `tests/jwks/<script>` run by the tests' Python.
fn script(name: &str) -> Command {
    let mut command = Command::new(python());
    command.arg(format!("{}/tests/jwks/{name}", env!("CARGO_MANIFEST_DIR")));
    command
}

/// A key pair made as an operator makes one (PKCS#8 private, SPKI public, PEM): (private, public).
fn key_pair(dir: &Path, name: &str, algorithm: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("the keys' directory");
    let (private, public) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.pub.pem")),
    );
    let status = script("keygen.py")
        .args([
            algorithm,
            &private.display().to_string(),
            &public.display().to_string(),
        ])
        .status()
        .expect("TEST_PYTHON runs keygen.py");
    assert!(status.success(), "keygen.py (cryptography installed?)");
    (private, public)
}

/// What PyJWT's `PyJWKClient` makes of `token` with `app`'s JWK Set: the claims, or its error.
fn verified_elsewhere(app: &TestApp, token: &str) -> Result<Value, String> {
    let output = script("verify.py")
        .args([&app.url("/.well-known/jwks.json"), token, ISSUER, AUDIENCE])
        .output()
        .expect("TEST_PYTHON runs verify.py");
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if output.status.success() {
        serde_json::from_str(&printed).map_err(|e| format!("{e}: {printed}"))
    } else {
        Err(format!(
            "{printed} {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

async fn jwks(app: &TestApp) -> (Value, String) {
    let response = (app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await)
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cache = (response.headers().get("cache-control"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (response.json().await.unwrap(), cache)
}

fn kids(set: &Value) -> Vec<String> {
    (set["keys"].as_array().into_iter().flatten())
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect()
}

#[actix_web::test]
async fn under_hs256_the_jwk_set_is_empty_and_tokens_name_the_audience() {
    let app = spawn_app().await;
    let (set, cache) = jwks(&app).await;
    assert_eq!(set, json!({"keys": []}));
    assert!(cache.contains("max-age="), "{cache}");
    let (_, _, access, refresh) = app.signed_in_user().await;
    for (token, aud) in [
        (&access, AUDIENCE.to_string()),
        (&refresh, format!("{AUDIENCE}/refresh")),
    ] {
        assert_eq!(jwt_part(token, 0)["alg"], "HS256");
        assert_eq!(jwt_part(token, 1)["aud"], aud.as_str());
        assert_eq!(jwt_part(token, 1)["iss"], ISSUER);
    }
    assert!(!set.to_string().contains(TEST_SECRET));
}

/// For each public-key algorithm: the service makes its development key, publishes it, and a
/// verifier that knows nothing but the JWK Set's address checks the tokens it signs.
#[actix_web::test]
async fn a_stock_verifier_checks_eddsa_and_es256_tokens_from_the_jwk_set_alone() {
    for (algorithm, crv) in [("EdDSA", "Ed25519"), ("ES256", "P-256")] {
        let app = spawn_app_with(&[("JWT_ALGORITHM", algorithm)]).await;
        let (set, _) = jwks(&app).await;
        let keys = set["keys"].as_array().cloned().unwrap_or_default();
        assert_eq!(keys.len(), 1, "{set}");
        assert_eq!(keys[0]["crv"], crv, "{set}");
        assert_eq!(keys[0]["alg"], algorithm, "{set}");
        assert_eq!(keys[0]["use"], "sig", "{set}");
        assert!(keys[0].get("d").is_none(), "no private part: {set}");

        let (_, id, access, refresh) = app.signed_in_user().await;
        assert_eq!(jwt_part(&access, 0)["alg"], algorithm);
        // A refresh token names an audience of its own: a verifier never takes it for access.
        assert!(verified_elsewhere(&app, &refresh).is_err());
        assert_eq!(jwt_part(&access, 0)["kid"], keys[0]["kid"]);
        let checked =
            verified_elsewhere(&app, &access).unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        assert_eq!(checked["claims"]["sub"], id.as_str(), "{checked}");
        assert_eq!(checked["claims"]["aud"], AUDIENCE, "{checked}");
        assert_eq!(app.me(&access).await.status(), StatusCode::OK);

        // A token of another key, or for another audience, is refused by the verifier too.
        let mut claims = jwt_part(&access, 1);
        claims["aud"] = json!("another-service");
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
        )
        .unwrap();
        assert!(verified_elsewhere(&app, &forged).is_err());
        assert_eq!(app.me(&forged).await.status(), StatusCode::UNAUTHORIZED);
    }
}

/// A two-phase rotation of public keys, instance by instance on one isolation: the next key is
/// published before it signs; then it signs, the old one verifies as previous (old and new
/// tokens both pass the verifier and `/auth/me`); when the old key is dropped, its tokens get 401.
#[actix_web::test]
async fn a_rotation_of_public_keys_keeps_old_tokens_until_the_old_key_is_dropped() {
    let iso = Isolation::new();
    let dir = iso.data_dir.with_extension("keys");
    let (a, a_public) = key_pair(&dir, "a", "EdDSA");
    let (b, b_public) = key_pair(&dir, "b", "EdDSA");
    let path = |p: &PathBuf| p.display().to_string();
    let settings = |private: &PathBuf, extra: Vec<(&'static str, String)>| {
        let mut all = vec![
            ("JWT_ALGORITHM", "EdDSA".to_string()),
            ("JWT_PRIVATE_KEY_FILE", path(private)),
            ("MAX_CONCURRENT_SESSIONS", "5".to_string()),
        ];
        all.extend(extra);
        all
    };
    let start = |settings: Vec<(&'static str, String)>| {
        let iso = &iso;
        async move {
            let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
            spawn_app_in(iso, &pairs).await
        }
    };

    // Phase 1: A signs, B is published as next.
    let phase1 = start(settings(
        &a,
        vec![("JWT_NEXT_PUBLIC_KEY_FILE", path(&b_public))],
    ))
    .await;
    let (email, _) = phase1.create_user().await;
    let (old_access, _) = phase1.tokens_for(&email).await;
    let (set, _) = jwks(&phase1).await;
    assert_eq!(kids(&set).len(), 2, "current and next: {set}");
    let kid_a = jwt_part(&old_access, 0)["kid"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // Phase 2: B signs, A verifies as previous.
    let phase2 = start(settings(
        &b,
        vec![("JWT_PREVIOUS_PUBLIC_KEY_FILES", path(&a_public))],
    ))
    .await;
    let (new_access, _) = phase2.tokens_for(&email).await;
    let kid_b = jwt_part(&new_access, 0)["kid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(kid_a, kid_b);
    assert!(
        kids(&set).contains(&kid_b),
        "B was published before it signed: {set}"
    );
    for token in [&old_access, &new_access] {
        verified_elsewhere(&phase2, token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(phase2.me(token).await.status(), StatusCode::OK);
    }

    // Phase 3: A is dropped.
    let phase3 = start(settings(&b, vec![])).await;
    assert_eq!(kids(&jwks(&phase3).await.0), vec![kid_b]);
    assert!(verified_elsewhere(&phase3, &old_access).is_err());
    assert_error(phase3.me(&old_access).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(phase3.me(&new_access).await.status(), StatusCode::OK);
}

const CLIENT_ID: &str = "billing";
const CLIENT_SECRET: &str = "billing-introspection-secret-0123456789abcdef";

async fn introspect(app: &TestApp, token: &str, secret: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/auth/introspect"))
        .form(&[("token", token), ("token_type_hint", "access_token")]);
    if let Some(secret) = secret {
        request = request.basic_auth(CLIENT_ID, Some(secret));
    }
    request.send().await.unwrap()
}

async fn active(app: &TestApp, token: &str) -> Value {
    let response = introspect(app, token, Some(CLIENT_SECRET)).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Introspection says whether a token is live now, as the service itself would judge it: active
/// for a live access or refresh token; inactive after a logout, a session end, a password change,
/// and for a forged, expired or unreadable token. A caller without the client's credentials gets
/// 401; malformed requests get 4xx, never 5xx.
#[actix_web::test]
async fn introspection_tells_another_service_whether_a_token_is_live() {
    let clients = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    let app = spawn_app_with(&[
        ("INTROSPECTION_CLIENTS", clients.as_str()),
        ("MAX_CONCURRENT_SESSIONS", "5"),
    ])
    .await;
    let (email, id, access, refresh) = app.signed_in_user().await;

    let live = active(&app, &access).await;
    assert_eq!(live["active"], true, "{live}");
    assert_eq!(live["sub"], id.as_str(), "{live}");
    assert_eq!(live["token_type"], "Bearer", "{live}");
    assert_eq!(live["typ"], "access", "{live}");
    assert_eq!(live["client_id"], CLIENT_ID, "{live}");
    assert_eq!(live["aud"], AUDIENCE, "{live}");
    assert_eq!(live["role"], "user", "{live}");
    let live = active(&app, &refresh).await;
    assert_eq!(live["active"], true, "{live}");
    assert_eq!(live["typ"], "refresh", "{live}");
    assert_eq!(live["aud"], format!("{AUDIENCE}/refresh"), "{live}");
    assert!(live.get("token_type").is_none(), "{live}");

    // JSON is read too.
    let as_json = (app.client.post(app.url("/auth/introspect")))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .json(&json!({"token": access}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_json.json::<Value>().await.unwrap()["active"], true);

    // Ended each way.
    assert_eq!(app.logout(&access).await.status(), StatusCode::OK);
    assert_eq!(active(&app, &access).await, json!({"active": false}));
    assert_eq!(active(&app, &refresh).await, json!({"active": false}));
    let (second, _) = app.tokens_for(&email).await;
    let (third, _) = app.tokens_for(&email).await;
    let sid = jwt_part(&second, 1)["sid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ended = app
        .delete_auth(&format!("/auth/sessions/{sid}"), &third)
        .await;
    assert_eq!(ended.status(), StatusCode::OK);
    assert_eq!(active(&app, &second).await["active"], false);
    let change = json!({"password": "another-password-9", "current_password": PASSWORD});
    let changed = app.put_auth(&format!("/auth/{id}"), &third, &change).await;
    assert_eq!(changed.status(), StatusCode::OK);
    let (_, _, other_access, _) = app.signed_in_user().await;
    assert_eq!(active(&app, &other_access).await["active"], true);

    // Forged, expired, not a token at all.
    let mut claims = jwt_part(&other_access, 1);
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-0123456789abcdef0123"),
    )
    .unwrap();
    claims["exp"] = json!(chrono::Utc::now().timestamp() - 60);
    let expired = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    for token in [
        forged.as_str(),
        &expired,
        "garbage",
        &"x".repeat(10_000),
        "a.b.c",
    ] {
        assert_eq!(
            active(&app, token).await,
            json!({"active": false}),
            "{token:.40}"
        );
    }

    // The client's credentials.
    assert_error(
        introspect(&app, &other_access, None).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let wrong = introspect(
        &app,
        &other_access,
        Some("billing-introspection-secret-WRONG"),
    )
    .await;
    let challenge = (wrong.headers().get("www-authenticate"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(challenge.starts_with("Basic"), "{challenge}");
    assert_error(wrong, StatusCode::UNAUTHORIZED).await;
    let bearer = (app.client.post(app.url("/auth/introspect")))
        .bearer_auth(&other_access)
        .form(&[("token", other_access.as_str())])
        .send()
        .await
        .unwrap();
    assert_error(bearer, StatusCode::UNAUTHORIZED).await;

    // Malformed requests: 4xx, never 5xx.
    let authed = || {
        (app.client.post(app.url("/auth/introspect"))).basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
    };
    let cases = [
        authed().form(&[("token", "")]),
        authed().form(&[("not_token", "x")]),
        authed()
            .body("{")
            .header("content-type", "application/json"),
        authed()
            .body("token=x")
            .header("content-type", "text/plain"),
        authed(),
    ];
    for case in cases {
        let response = case.send().await.unwrap();
        let status = response.status();
        assert!(status.is_client_error(), "{status}");
        assert_error(response, status).await;
    }
}

/// Each client has its own rate: past `INTROSPECTION_RATE_LIMIT` a second it gets 429 with
/// `Retry-After`, while another client goes on.
#[actix_web::test]
async fn each_introspection_client_has_its_own_rate() {
    let clients =
        format!("{CLIENT_ID}:{CLIENT_SECRET},audit:audit-introspection-secret-0123456789abcdef");
    let app = spawn_app_with(&[
        ("INTROSPECTION_CLIENTS", clients.as_str()),
        ("INTROSPECTION_RATE_LIMIT", "3"),
    ])
    .await;
    let (_, _, access, _) = app.signed_in_user().await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            introspect(&app, &access, Some(CLIENT_SECRET))
                .await
                .status(),
        );
    }
    assert_eq!(&statuses[..3], [StatusCode::OK; 3], "{statuses:?}");
    assert!(
        statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let limited = introspect(&app, &access, Some(CLIENT_SECRET)).await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS).await;
    let other = (app.client.post(app.url("/auth/introspect")))
        .basic_auth("audit", Some("audit-introspection-secret-0123456789abcdef"))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

/// A logout and introspections of its token released together, five rounds: every answer is
/// 200 (active or not, never a 5xx), and once the logout is answered the token is inactive.
#[actix_web::test]
async fn introspections_racing_a_logout_never_see_the_token_live_after_it() {
    let clients = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    let app = spawn_app_with(&[("INTROSPECTION_CLIENTS", clients.as_str())]).await;
    for _ in 0..5 {
        let (_, _, access, _) = app.signed_in_user().await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(9));
        let checks = (0..8).map(|_| {
            let (app, access, barrier) = (&app, access.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                introspect(app, &access, Some(CLIENT_SECRET)).await.status()
            }
        });
        let logout = async {
            barrier.wait().await;
            app.logout(&access).await.status()
        };
        let (statuses, logged_out) =
            futures::future::join(futures::future::join_all(checks), logout).await;
        assert_eq!(logged_out, StatusCode::OK);
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        assert_eq!(active(&app, &access).await, json!({"active": false}));
    }
}

/// The role introspection gives is the user's now (a token's `role` claim is the role at sign-in,
/// and a refresh keeps it); a suspended user's token is not active.
#[actix_web::test]
async fn introspection_gives_the_role_as_it_is_now() {
    let clients = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    let (app, admin) =
        crate::helpers::spawn_app_with_admin(&[("INTROSPECTION_CLIENTS", clients.as_str())]).await;
    let (_, id, access, _) = app.signed_in_user().await;
    assert_eq!(active(&app, &access).await["role"], "user");
    let promoted = app
        .put_auth(&format!("/auth/{id}"), &admin, &json!({"role": "admin"}))
        .await;
    assert_eq!(promoted.status(), StatusCode::OK);
    assert_eq!(jwt_part(&access, 1)["role"], "user");
    assert_eq!(active(&app, &access).await["role"], "admin");
    let demoted = app
        .put_auth(&format!("/auth/{id}"), &admin, &json!({"role": "user"}))
        .await;
    assert_eq!(demoted.status(), StatusCode::OK);
    assert_eq!(active(&app, &access).await["role"], "user");
    let (_, other_id, other_access, _) = app.signed_in_user().await;
    let suspended = app
        .put_auth(
            &format!("/auth/{other_id}"),
            &admin,
            &json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(suspended.status(), StatusCode::OK);
    assert_eq!(active(&app, &other_access).await, json!({"active": false}));
}

/// Under a public-key algorithm a TokenActor keeps the tokens it verified, so a client reusing
/// its token costs no second signature check; the token's expiry is still checked on each use.
#[actix_web::test]
async fn a_verified_eddsa_token_still_expires() {
    let app = spawn_app_with(&[
        ("JWT_ALGORITHM", "EdDSA"),
        ("JWT_ACCESS_TOKEN_EXPIRES", "2"),
    ])
    .await;
    let (_, _, access, _) = app.signed_in_user().await;
    for _ in 0..3 {
        assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    }
    let mut tampered = jwt_part(&access, 1);
    tampered["role"] = json!("admin");
    let parts: Vec<&str> = access.split('.').collect();
    let forged = {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&tampered).unwrap());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    assert_error(app.me(&forged).await, StatusCode::UNAUTHORIZED).await;
    actix_web::rt::time::sleep(std::time::Duration::from_millis(3100)).await;
    let message = assert_error(app.me(&access).await, StatusCode::UNAUTHORIZED).await;
    assert!(message.to_lowercase().contains("expired"), "{message}");
}
