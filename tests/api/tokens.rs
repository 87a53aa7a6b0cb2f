use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mongodb::bson::{doc, oid::ObjectId};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_unauthorized, spawn_app, spawn_app_with, TEST_SECRET};

/// The claims of a token, read without checking it.
pub(crate) fn claims_of(token: &str) -> Value {
    crate::helpers::jwt_part(token, 1)
}

pub(crate) fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[actix_web::test]
async fn me_returns_the_user_and_their_wallet() {
    let app = spawn_app().await;
    let (email, id, access, _) = app.signed_in_user().await;

    let response = app.me(&access).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["data"]["user"]["_id"], id.as_str());
    assert_eq!(body["data"]["user"]["email"], email.as_str());
    assert!(body["data"]["user"].get("password_hash").is_none());
    assert_eq!(body["data"]["wallet"]["user_id"], id.as_str());
    assert_eq!(body["data"]["wallet"]["currency"], "credits");
}

#[actix_web::test]
async fn tokens_carry_the_contract_claims() {
    let app = spawn_app().await;
    let (_, id, access, refresh) = app.signed_in_user().await;

    let a = claims_of(&access);
    let r = claims_of(&refresh);

    for key in ["sub", "sid", "jti", "typ", "role", "iat", "exp", "iss"] {
        assert!(a.get(key).is_some() && r.get(key).is_some(), "{key}");
    }
    assert_eq!(a["sub"], id.as_str());
    assert_eq!(
        (a["typ"].as_str(), r["typ"].as_str()),
        (Some("access"), Some("refresh"))
    );
    assert_eq!(a["sid"], r["sid"]);
    assert_ne!(a["jti"], r["jti"]);
    assert_eq!(
        a["exp"].as_i64().unwrap() - a["iat"].as_i64().unwrap(),
        1800
    );
}

#[actix_web::test]
async fn refresh_rotates_and_the_old_pair_stops_working() {
    let app = spawn_app().await;
    let (_, id, access, refresh) = app.signed_in_user().await;

    let response = app.refresh(&refresh).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], json!(true));
    let data = &body["data"];
    assert_eq!(data["token_type"], "Bearer");
    assert_eq!(data["expires_in"], 1800);
    let new_access = data["access_token"].as_str().unwrap();
    assert_ne!(new_access, access);
    assert_eq!(app.me(new_access).await.status(), StatusCode::OK);
    assert_unauthorized(app.me(&access).await).await;
    assert!(app
        .audit_actions(&id)
        .await
        .contains(&"token.refresh".to_string()));
}

#[actix_web::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_session() {
    let app = spawn_app().await;
    let (_, _, _, refresh) = app.signed_in_user().await;
    let body: Value = app.refresh(&refresh).await.json().await.unwrap();
    let new_access = body["data"]["access_token"].as_str().unwrap().to_string();
    let new_refresh = body["data"]["refresh_token"].as_str().unwrap().to_string();

    let message = assert_unauthorized(app.refresh(&refresh).await).await;

    assert!(message.contains("reuse"), "{message}");
    let message = assert_unauthorized(app.me(&new_access).await).await;
    assert!(message.contains("reuse"), "{message}");
    assert_unauthorized(app.refresh(&new_refresh).await).await;
    assert_eq!(
        app.count("audit_log", doc! {"action": "token.refresh.reuse"})
            .await,
        1
    );
}

#[actix_web::test]
async fn within_the_grace_window_a_retried_refresh_gets_the_same_successor() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE", "30")]).await;
    let (_, _, _, refresh) = app.signed_in_user().await;

    let first: Value = app.refresh(&refresh).await.json().await.unwrap();
    let second = app.refresh(&refresh).await;

    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["data"], second["data"]);
    let access = first["data"]["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await.status(), StatusCode::OK);
    // The successor itself rotates normally.
    let successor = first["data"]["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(successor).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_refresh_token_is_not_an_access_token_nor_the_reverse() {
    let app = spawn_app().await;
    let (_, _, access, refresh) = app.signed_in_user().await;

    let as_access = assert_unauthorized(app.me(&refresh).await).await;
    let as_refresh = assert_unauthorized(app.refresh(&access).await).await;

    assert!(as_access.contains("refresh token"), "{as_access}");
    assert!(as_refresh.contains("access token"), "{as_refresh}");
    // Neither misuse harmed the session.
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn forged_tokens_are_401() {
    let app = spawn_app().await;
    let (_, _, access, _) = app.signed_in_user().await;
    let claims = claims_of(&access);

    let other_key = sign(&claims, "some-other-secret-key-of-sufficient-length");
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let alg_none = format!("{header}.{payload}.");
    let mut tampered_claims = claims.clone();
    tampered_claims["role"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        access.split('.').next().unwrap(),
        URL_SAFE_NO_PAD.encode(tampered_claims.to_string()),
        access.split('.').nth(2).unwrap()
    );

    for token in [
        other_key,
        alg_none,
        tampered,
        "garbage".into(),
        "a.b.c".into(),
    ] {
        let message = assert_unauthorized(app.me(&token).await).await;
        assert_eq!(message, "Invalid token");
    }
}

#[actix_web::test]
async fn an_expired_token_is_401_saying_so() {
    let app = spawn_app().await;
    let (_, _, access, _) = app.signed_in_user().await;
    let mut claims = claims_of(&access);
    claims["exp"] = json!(claims["iat"].as_i64().unwrap() - 10);

    let message = assert_unauthorized(app.me(&sign(&claims, TEST_SECRET)).await).await;

    assert!(message.contains("expired"), "{message}");
}

#[actix_web::test]
async fn missing_or_non_bearer_authorization_is_401() {
    let app = spawn_app().await;

    let none = app.client.get(app.url("/auth/me")).send().await.unwrap();
    let basic = app
        .client
        .get(app.url("/auth/me"))
        .basic_auth("user", Some("pass"))
        .send()
        .await
        .unwrap();
    let empty = app
        .client
        .get(app.url("/auth/me"))
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();

    assert_unauthorized(none).await;
    let message = assert_unauthorized(basic).await;
    assert!(message.contains("Bearer"), "{message}");
    assert_unauthorized(empty).await;
}

#[actix_web::test]
async fn a_deleted_users_token_is_401_saying_so() {
    let app = spawn_app().await;
    let (_, id, access, refresh) = app.signed_in_user().await;
    app.store
        .delete_one("users", doc! {"_id": ObjectId::parse_str(&id).unwrap()})
        .await;

    let message = assert_unauthorized(app.me(&access).await).await;

    assert!(message.contains("deleted"), "{message}");
    assert_unauthorized(app.refresh(&refresh).await).await;
}

#[actix_web::test]
async fn a_suspended_users_token_is_401_saying_so() {
    let app = spawn_app().await;
    let (_, id, access, _) = app.signed_in_user().await;
    app.store
        .set(
            "users",
            doc! {"_id": ObjectId::parse_str(&id).unwrap()},
            doc! {"status": "suspended"},
        )
        .await;

    let message = assert_unauthorized(app.me(&access).await).await;

    assert!(message.contains("suspended"), "{message}");
}
