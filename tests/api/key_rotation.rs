//! Signing-key rotation (SPEC 8): `JWT_SECRET_KEY` signs, `JWT_PREVIOUS_SECRET_KEYS` still verify
//! the tokens they signed, named by the `kid` header (a fingerprint, never the key). Instances
//! started one after another on one isolation are the rolling restart of a rotation.
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{jwt_part, spawn_app_in, Isolation, TestApp};

const KEY_A: &str = "rotation-key-A-0123456789abcdef0123456789";
const KEY_B: &str = "rotation-key-B-0123456789abcdef0123456789";

fn kid(token: &str) -> Option<String> {
    jwt_part(token, 0)["kid"].as_str().map(str::to_string)
}

/// The same claims signed again with `key`, with `kid` in the header if given.
fn resigned(token: &str, key: &str, kid: Option<&str>) -> String {
    let header = Header {
        kid: kid.map(str::to_string),
        ..Header::new(Algorithm::HS256)
    };
    jsonwebtoken::encode(
        &header,
        &jwt_part(token, 1),
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

async fn instance(iso: &Isolation, key: &str, previous: Option<&str>) -> TestApp {
    let mut settings = vec![("JWT_SECRET_KEY", key), ("MAX_CONCURRENT_SESSIONS", "5")];
    if let Some(previous) = previous {
        settings.push(("JWT_PREVIOUS_SECRET_KEYS", previous));
    }
    spawn_app_in(iso, &settings).await
}

async fn pair(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let data = &body["data"];
    (
        data["access_token"].as_str().unwrap().to_string(),
        data["refresh_token"].as_str().unwrap().to_string(),
    )
}

#[actix_web::test]
async fn a_rotation_keeps_every_session_and_dropping_the_old_key_ends_its_tokens_at_once() {
    let iso = Isolation::new();
    let before = instance(&iso, KEY_A, None).await;
    let (email, _) = before.create_user().await;
    let (access_a, refresh_a) = before.tokens_for(&email).await;
    let (access_a2, refresh_a2) = before.tokens_for(&email).await;
    let kid_a = kid(&access_a).expect("tokens carry a kid");
    assert_eq!(kid_a.len(), 16, "{kid_a}");
    assert!(kid_a.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!KEY_A.contains(&kid_a) && kid(&refresh_a) == Some(kid_a.clone()));

    // Rotated: B signs, A still verifies. Sessions started under A keep working.
    let rotated = instance(&iso, KEY_B, Some(&format!("{KEY_A}, "))).await;
    assert_eq!(rotated.me(&access_a).await.status(), StatusCode::OK);
    let (access_b, refresh_b) = pair(rotated.refresh(&refresh_a).await).await;
    let kid_b = kid(&access_b).unwrap();
    assert_ne!(kid_b, kid_a, "the new pair is signed with the new key");
    assert_eq!(rotated.me(&access_b).await.status(), StatusCode::OK);
    // An instance not yet restarted (A only) does not know B: the rolling restart must finish
    // before B's tokens reach it. Its own A tokens still work there.
    assert_eq!(before.me(&access_a2).await.status(), StatusCode::OK);

    // A dropped: its tokens end at once; B's keep working.
    let after = instance(&iso, KEY_B, None).await;
    assert_eq!(
        after.me(&access_a2).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        after.refresh(&refresh_a2).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(after.me(&access_b).await.status(), StatusCode::OK);
    let (access_b2, _) = pair(after.refresh(&refresh_b).await).await;
    assert_eq!(after.me(&access_b2).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_token_without_kid_verifies_with_the_current_key_only_and_an_unknown_kid_is_refused() {
    let iso = Isolation::new();
    let app = instance(&iso, KEY_A, None).await;
    let (email, _) = app.create_user().await;
    let (access, _) = app.tokens_for(&email).await;
    // As issued before keys had ids: the same claims, no kid.
    let legacy = resigned(&access, KEY_A, None);
    assert_eq!(kid(&legacy), None);
    assert_eq!(app.me(&legacy).await.status(), StatusCode::OK);

    let rotated = instance(&iso, KEY_B, Some(KEY_A)).await;
    // Without kid: checked with JWT_SECRET_KEY (now B) only, so an A-signed one is refused.
    assert_eq!(rotated.me(&legacy).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(rotated.me(&access).await.status(), StatusCode::OK);
    // A kid naming no key, or A's kid on a token signed with another key: refused.
    let unknown = resigned(
        &access,
        "some-other-key-0123456789abcdef0123",
        Some("00ff00ff00ff00ff"),
    );
    assert_eq!(
        rotated.me(&unknown).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let forged = resigned(
        &access,
        "some-other-key-0123456789abcdef0123",
        kid(&access).as_deref(),
    );
    assert_eq!(rotated.me(&forged).await.status(), StatusCode::UNAUTHORIZED);
    // The current key's tokens without kid work on the rotated instance.
    let (fresh, _) = rotated.tokens_for(&email).await;
    assert_eq!(
        rotated.me(&resigned(&fresh, KEY_B, None)).await.status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn production_refuses_a_previous_key_shorter_than_32_bytes() {
    let iso = Isolation::new();
    let env = iso.env(&[
        ("APP_ENV", "production"),
        ("JWT_SECRET_KEY", KEY_A),
        ("JWT_PREVIOUS_SECRET_KEYS", "short-key"),
    ]);
    let error = cs_user_management::configuration::Settings::load_from(&env)
        .expect_err("a short previous key is refused in production");
    assert!(
        error.to_string().contains("JWT_PREVIOUS_SECRET_KEYS"),
        "{error}"
    );
}
