//! The sessions API's workflows: a user lists and ends their own sessions, an administrator ends
//! every session of a user. Ending is one atomic store operation that checks the session is the
//! user's, so a session id of someone else ends nothing (404), and a refresh racing the end
//! cannot bring the session back.
use std::sync::Arc;

use super::admin::revoke_all;
use super::messages::{
    EndMyOtherSessions, EndMySession, EndUserSessions, LiftUserLockout, ListMySessions,
};
use super::{Accounts, MySessions};
use crate::db_queue::FindUserById;
use crate::domain::{AuditEntry, EmailKey, EndReason, SessionId};
use crate::session::LiftLockout;
use crate::token::{EndDevices, ListSessions, RevokeSession};
use crate::ActorError;

const NO_SUCH_SESSION: ActorError = ActorError::NotFound("Session");

pub(super) async fn list(a: Arc<Accounts>, m: ListMySessions) -> Result<MySessions, ActorError> {
    let (principal, user) = a.caller(m.token).await?;
    let sessions = a.tokens.call(ListSessions(user.id)).await?;
    Ok(MySessions {
        sessions,
        current: principal.session_id,
    })
}

pub(super) async fn end_one(a: Arc<Accounts>, m: EndMySession) -> Result<(), ActorError> {
    let (principal, user) = a.caller(m.token).await?;
    let session_id = SessionId::parse(&m.session_id).map_err(|_| NO_SUCH_SESSION)?;
    let ended = a
        .tokens
        .call(RevokeSession {
            user_id: user.id,
            session_id: session_id.clone(),
            reason: EndReason::Revoked,
        })
        .await?;
    if !ended {
        return Err(NO_SUCH_SESSION);
    }
    let entry = AuditEntry::new("session.revoked", "success")
        .user(user.id)
        .actor(user.id)
        .ip(m.ip)
        .detail("session_id", session_id.as_str())
        .detail("by", "user")
        .detail("current", principal.session_id == session_id);
    a.audit(entry).await
}

pub(super) async fn end_others(
    a: Arc<Accounts>,
    m: EndMyOtherSessions,
) -> Result<usize, ActorError> {
    let (principal, user) = a.caller(m.token).await?;
    let ended = revoke_all(
        &a,
        user.id,
        EndReason::Revoked,
        Some(principal.session_id.clone()),
        None,
    )
    .await?;
    let entry = AuditEntry::new("session.revoked", "success")
        .user(user.id)
        .actor(user.id)
        .ip(m.ip)
        .detail("by", "user")
        .detail("kept", principal.session_id.as_str())
        .detail("ended", ended as i64);
    a.audit(entry).await?;
    Ok(ended)
}

/// The caller, who must be an administrator, and the user they act on (404 when none).
async fn admin_and_target(
    a: &Accounts,
    token: String,
    target: crate::domain::UserId,
) -> Result<(crate::domain::User, crate::domain::User), ActorError> {
    let admin = a.admin(token).await?;
    let target =
        a.db.call(FindUserById(target))
            .await?
            .ok_or(ActorError::NotFound("User"))?;
    Ok((admin, target))
}

pub(super) async fn end_users(a: Arc<Accounts>, m: EndUserSessions) -> Result<usize, ActorError> {
    let (admin, target) = admin_and_target(&a, m.token, m.target).await?;
    let ended = revoke_all(&a, target.id, EndReason::Revoked, None, None).await?;
    // And the devices it signed in from: their next login is an unknown client's (SPEC 10).
    a.tokens.call(EndDevices(target.id)).await?;
    let entry = AuditEntry::new("session.revoked", "success")
        .user(target.id)
        .actor(admin.id)
        .ip(m.ip)
        .detail("by", "admin")
        .detail("ended", ended as i64)
        .detail("devices", "ended");
    a.audit(entry).await?;
    Ok(ended)
}

/// An administrator lifts a user's lockout: every failure counter of the user's email (every
/// spelling, SPEC 10) is cleared, so the owner signs in at once from anywhere. Audited.
pub(super) async fn lift_lockout(a: Arc<Accounts>, m: LiftUserLockout) -> Result<u64, ActorError> {
    let (admin, target) = admin_and_target(&a, m.token, m.target).await?;
    let cleared = a
        .sessions
        .call(LiftLockout(EmailKey::of(&target.email)))
        .await?;
    let entry = AuditEntry::new("user.lockout.lifted", "success")
        .user(target.id)
        .actor(admin.id)
        .ip(m.ip)
        .detail("counters", cleared as i64);
    a.audit(entry).await?;
    Ok(cleared)
}
