//! The session store's contract: each case runs on every backend this run has (embedded always,
//! Redis when `TEST_REDIS_HOST`/`TEST_REDIS_PORT` are set), on real servers, with the same
//! expectations. Time is passed in (`now_ms`), so the grace window is crossed without waiting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use actors::domain::{EndReason, Role, SessionId, UserId};
use actors::session_store::{
    AccessCheck, AccessRequest, EndAllRequest, EndRequest, LimitPolicy, OpenRequest, Opening,
    RotateRequest, Rotation, SessionRules, SessionStore, TokenKind,
};
use common::SessionBackend;

fn rules(max_concurrent: u32, policy: LimitPolicy, reuse_grace: Duration) -> SessionRules {
    SessionRules {
        max_concurrent,
        policy,
        lifetime: Duration::from_secs(3_600),
        idle_timeout: Duration::from_secs(600),
        reuse_grace,
        device_ttl: Duration::from_secs(3_600),
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn jti() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A session of `uid`, its tokens' ids and when it opened.
struct Opened {
    sid: SessionId,
    access: String,
    refresh: String,
}

async fn open_at(
    store: &SessionStore,
    uid: UserId,
    now_ms: i64,
    credential_version: i64,
) -> (Opening, Opened) {
    let opened = Opened {
        sid: SessionId::new(),
        access: jti(),
        refresh: jti(),
    };
    let opening = store
        .open_session(OpenRequest {
            sid: opened.sid.clone(),
            uid,
            role: Role::User,
            now_ms,
            access_jti: opened.access.clone(),
            refresh_jti: opened.refresh.clone(),
            credential_version,
            ip: "10.0.0.1".into(),
            user_agent: "contract-test".into(),
        })
        .await
        .expect("the store answers");
    (opening, opened)
}

/// Opens a session that must open.
async fn open(store: &SessionStore, uid: UserId, now_ms: i64) -> Opened {
    let (opening, opened) = open_at(store, uid, now_ms, 0).await;
    assert!(matches!(opening, Opening::Opened { .. }), "{opening:?}");
    opened
}

async fn check(
    store: &SessionStore,
    uid: UserId,
    sid: &SessionId,
    kind: TokenKind,
    jti: &str,
) -> AccessCheck {
    store
        .check_access(AccessRequest {
            sid: sid.clone(),
            uid,
            kind,
            jti: jti.to_string(),
            now_ms: now(),
        })
        .await
        .expect("the store answers")
}

async fn access(store: &SessionStore, uid: UserId, s: &Opened) -> AccessCheck {
    check(store, uid, &s.sid, TokenKind::Access, &s.access).await
}

/// Presents `presented` to rotate `s` to a new pair; replies with the rotation and the pair's
/// ids (`successor` is the new refresh token's id).
async fn rotate(
    store: &SessionStore,
    uid: UserId,
    s: &Opened,
    presented: &str,
    now_ms: i64,
) -> (Rotation, Opened) {
    let next = Opened {
        sid: s.sid.clone(),
        access: jti(),
        refresh: jti(),
    };
    let rotation = store
        .rotate(RotateRequest {
            sid: s.sid.clone(),
            uid,
            presented_jti: presented.to_string(),
            access_jti: next.access.clone(),
            refresh_jti: next.refresh.clone(),
            now_ms,
            successor: next.refresh.clone(),
        })
        .await
        .expect("the store answers");
    (rotation, next)
}

fn live(credential_version: i64) -> AccessCheck {
    AccessCheck::Live { credential_version }
}

async fn opening_beyond_the_limit_evicts_the_oldest(backend: &SessionBackend) {
    // Arrange
    let store = backend.open(rules(2, LimitPolicy::EvictOldest, Duration::ZERO));
    let (uid, t) = (UserId::new(), now());
    let oldest = open(&store, uid, t).await;
    let second = open(&store, uid, t + 1).await;

    // Act
    let (opening, newest) = open_at(&store, uid, t + 2, 0).await;

    // Assert
    let expected = Opening::Opened {
        evicted: vec![oldest.sid.clone()],
        expired: vec![],
    };
    assert_eq!(opening, expected);
    assert_eq!(
        access(&store, uid, &oldest).await,
        AccessCheck::Ended(EndReason::Evicted)
    );
    assert_eq!(access(&store, uid, &second).await, live(0));
    assert_eq!(access(&store, uid, &newest).await, live(0));
    let listed: Vec<String> = store
        .list_sessions(uid, now())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.sid)
        .collect();
    assert_eq!(listed, [newest.sid.to_string(), second.sid.to_string()]);
}

async fn opening_beyond_the_limit_under_reject_is_refused(backend: &SessionBackend) {
    // Arrange
    let store = backend.open(rules(1, LimitPolicy::Reject, Duration::ZERO));
    let (uid, t) = (UserId::new(), now());
    let first = open(&store, uid, t).await;

    // Act
    let (opening, refused) = open_at(&store, uid, t + 1, 0).await;

    // Assert
    assert_eq!(opening, Opening::Rejected);
    assert_eq!(access(&store, uid, &first).await, live(0));
    assert!(matches!(
        access(&store, uid, &refused).await,
        AccessCheck::Ended(_)
    ));
    let other_user = open(&store, UserId::new(), t + 1).await;
    assert!(!other_user.access.is_empty(), "the limit is per user");
}

async fn rotating_with_the_current_refresh_token_moves_the_session_to_the_new_pair(
    backend: &SessionBackend,
) {
    // Arrange
    let store = backend.open(rules(1, LimitPolicy::EvictOldest, Duration::ZERO));
    let uid = UserId::new();
    let before = open(&store, uid, now()).await;

    // Act
    let (rotation, after) = rotate(&store, uid, &before, &before.refresh, now()).await;

    // Assert
    assert_eq!(
        rotation,
        Rotation::Rotated {
            credential_version: 0
        }
    );
    assert_eq!(access(&store, uid, &after).await, live(0));
    assert_eq!(access(&store, uid, &before).await, AccessCheck::Superseded);
    let (sid, refresh) = (&after.sid, TokenKind::Refresh);
    let current = check(&store, uid, sid, refresh, &after.refresh).await;
    assert_eq!(current, live(0));
    let old = check(&store, uid, sid, refresh, &before.refresh).await;
    assert_eq!(old, AccessCheck::Superseded);
}

async fn an_old_refresh_token_within_the_grace_window_gets_the_successor(backend: &SessionBackend) {
    // Arrange
    let grace = Duration::from_secs(1);
    let store = backend.open(rules(1, LimitPolicy::EvictOldest, grace));
    let (uid, t) = (UserId::new(), now());
    let before = open(&store, uid, t).await;
    let (_, after) = rotate(&store, uid, &before, &before.refresh, t).await;

    // Act
    let (again, _) = rotate(&store, uid, &before, &before.refresh, t + 500).await;

    // Assert
    let expected = Rotation::Grace {
        pair: after.refresh.clone(),
        credential_version: 0,
    };
    assert_eq!(again, expected);
    assert_eq!(access(&store, uid, &after).await, live(0));
}

async fn an_old_refresh_token_after_the_grace_window_ends_the_session(backend: &SessionBackend) {
    // Arrange
    let grace = Duration::from_secs(1);
    let store = backend.open(rules(1, LimitPolicy::EvictOldest, grace));
    let (uid, t) = (UserId::new(), now());
    let before = open(&store, uid, t).await;
    let (_, after) = rotate(&store, uid, &before, &before.refresh, t).await;

    // Act
    let (late, _) = rotate(&store, uid, &before, &before.refresh, t + 1_001).await;

    // Assert
    assert_eq!(late, Rotation::Reuse);
    let reuse = AccessCheck::Ended(EndReason::RefreshReuse);
    assert_eq!(access(&store, uid, &after).await, reuse);
    let (then, _) = rotate(&store, uid, &after, &after.refresh, t + 1_002).await;
    assert_eq!(then, Rotation::Ended(EndReason::RefreshReuse));
}

async fn one_session_or_all_of_a_users_sessions_end(backend: &SessionBackend) {
    // Arrange
    let store = backend.open(rules(5, LimitPolicy::EvictOldest, Duration::ZERO));
    let (uid, t) = (UserId::new(), now());
    let [one, kept, other] = [
        open(&store, uid, t).await,
        open(&store, uid, t + 1).await,
        open(&store, uid, t + 2).await,
    ];
    let end = |uid: UserId, s: &Opened| EndRequest {
        uid,
        sid: s.sid.clone(),
        reason: EndReason::Logout,
    };

    // Act
    let by_a_stranger = store.end_session(end(UserId::new(), &one)).await.unwrap();
    let ended = store.end_session(end(uid, &one)).await.unwrap();
    let again = store.end_session(end(uid, &one)).await.unwrap();
    let all = store
        .end_user_sessions(EndAllRequest {
            uid,
            reason: EndReason::Revoked,
            keep: Some(kept.sid.clone()),
            credential_version: None,
        })
        .await
        .unwrap();

    // Assert
    assert_eq!((by_a_stranger, ended, again), (false, true, false));
    assert_eq!(all, [other.sid.to_string()]);
    let logout = AccessCheck::Ended(EndReason::Logout);
    assert_eq!(access(&store, uid, &one).await, logout);
    let revoked = AccessCheck::Ended(EndReason::Revoked);
    assert_eq!(access(&store, uid, &other).await, revoked);
    assert_eq!(access(&store, uid, &kept).await, live(0));
    let listed = store.list_sessions(uid, now()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sid, kept.sid.to_string());
}

async fn a_login_checked_under_an_old_credential_version_opens_nothing(backend: &SessionBackend) {
    // Arrange: the password changes (version 1) while a login still checks the old one.
    let store = backend.open(rules(5, LimitPolicy::EvictOldest, Duration::ZERO));
    let (uid, t) = (UserId::new(), now());
    let changer = open(&store, uid, t).await;
    let bystander = open(&store, uid, t + 1).await;
    store
        .end_user_sessions(EndAllRequest {
            uid,
            reason: EndReason::PasswordChanged,
            keep: Some(changer.sid.clone()),
            credential_version: Some(1),
        })
        .await
        .unwrap();

    // Act
    let (stale, _) = open_at(&store, uid, t + 2, 0).await;
    let (current, fresh) = open_at(&store, uid, t + 3, 1).await;

    // Assert
    assert_eq!(stale, Opening::Stale);
    assert!(matches!(current, Opening::Opened { .. }), "{current:?}");
    assert_eq!(access(&store, uid, &changer).await, live(1));
    assert_eq!(access(&store, uid, &fresh).await, live(1));
    let changed = AccessCheck::Ended(EndReason::PasswordChanged);
    assert_eq!(access(&store, uid, &bystander).await, changed);
}

on_every_backend!(
    SessionBackend:
    opening_beyond_the_limit_evicts_the_oldest,
    opening_beyond_the_limit_under_reject_is_refused,
    rotating_with_the_current_refresh_token_moves_the_session_to_the_new_pair,
    an_old_refresh_token_within_the_grace_window_gets_the_successor,
    an_old_refresh_token_after_the_grace_window_ends_the_session,
    one_session_or_all_of_a_users_sessions_end,
    a_login_checked_under_an_old_credential_version_opens_nothing,
);
