//! Registration, login, refresh, logout and the signed-in user.
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    Accounts, IntrospectToken, Introspection, Login, Logout, Me, Refresh, Register, SignedIn,
};
use crate::db_queue::Written;
use crate::db_queue::{
    FindUserByEmail, FindUserById, FindUserWithWallet, Guard, RecordLogin, UserWithWallet,
};
use crate::domain::{
    AttemptSource, AuditEntry, ClientIp, Email, EndReason, NewUser, Password, Registered, Role,
    User, UserStatus,
};
use crate::error::TokenRejection;
use crate::hasher::{HashPassword, VerifyPassword};
use crate::mailbox::Announced;
use crate::session::{BeginLoginAttempt, EndLoginAttempt, LoginAttempt, TakeRateToken};
use crate::session_store::AttemptOutcome;
use crate::token::{
    CheckDeviceToken, IssueDeviceToken, KnownDevice, OpenSession, OpenedSession, RevokeSession,
    RotateRefresh, Rotated, TokenPair,
};
use crate::ActorError;

pub(super) async fn register(a: Arc<Accounts>, m: Register) -> Result<Registered, ActorError> {
    let coming = a.hasher.stats().admit_announced()?;
    a.sessions.call(TakeRateToken(m.ip)).await?;
    drop(coming);
    let password_hash = a.hasher.call(HashPassword::new(m.password)).await?;
    let audit = AuditEntry::new("user.register", "success")
        .email(m.email.as_str())
        .ip(m.ip)
        .detail("username", m.username.as_str());
    let user = NewUser {
        email: m.email,
        username: m.username,
        password_hash,
        role: Role::User,
        status: UserStatus::Active,
    };
    let written = a.insert(user, Guard::Nobody, audit).await?;
    match written {
        Written::Applied(created) => {
            tracing::debug!(user_id = %created.user.id, "registered");
            Ok(created)
        }
        // A registration has no guard: nothing can have changed.
        Written::NotFound | Written::Changed => Err(ActorError::Conflict),
    }
}

/// Ends an admitted attempt; a failure to record it is logged, the caller's answer stands (the
/// slot is given back when the attempt goes stale).
pub(super) async fn end_attempt(
    a: &Accounts,
    attempt: LoginAttempt,
    outcome: AttemptOutcome,
) -> u64 {
    match a.sessions.call(EndLoginAttempt { attempt, outcome }).await {
        Ok(failures) => failures,
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(&e), "could not end a login attempt");
            0
        }
    }
}

pub(super) async fn login(a: Arc<Accounts>, m: Login) -> Result<SignedIn, ActorError> {
    let Login {
        email,
        password,
        ip,
        user_agent,
        device_token,
    } = m;
    // Refused at once in a storm the hashing pool cannot serve in time (SPEC 7), counting the
    // verifications admitted before it and still on their way; then rate-limited: a refused
    // request does no other work and counts toward nothing. The verification is announced
    // from here: the pool may wait a little for it to fill a batch.
    let coming = a.hasher.stats().admit_announced()?;
    a.sessions.call(TakeRateToken(ip)).await?;
    let (user, device) = verified_user(&a, &email, &password, ip, device_token, coming).await?;
    if user.status != UserStatus::Active {
        let entry = login_failure(&email, ip, "forbidden")
            .user(user.id)
            .detail("reason", user.status.as_str());
        a.audit(entry).await?;
        return Err(ActorError::AccountNotActive(user.status));
    }
    // The device this login came from (the same one again, or a new one), signed before the
    // session opens: nothing may fail between opening it and answering.
    let device_token = a
        .tokens
        .call(IssueDeviceToken {
            user_id: user.id,
            email: email.key().clone(),
            device,
        })
        .await?;
    let opened = open_session(&a, &user, &email, ip, user_agent).await?;
    let at = stamp_login(&a, &user, &opened, ip).await?;
    if needs_upgrade(&user.password_hash, a.settings.bcrypt_cost) {
        let verified = user.password_hash.clone();
        actix::spawn(upgrade_hash(Arc::clone(&a), user.id, verified, password));
    }
    tracing::debug!(user_id = %user.id, session_id = %opened.session_id, "signed in");
    Ok(SignedIn {
        user: User {
            last_login_at: Some(at),
            login_count: user.login_count + 1,
            ..user
        },
        tokens: opened.pair,
        device_token,
    })
}

/// A failed login's audit entry.
fn login_failure(email: &Email, ip: ClientIp, outcome: &'static str) -> AuditEntry {
    AuditEntry::new("auth.login.failure", outcome)
        .email(email.as_str())
        .ip(ip)
}

/// The account `email` names when `password` is its own, with the device the login came from
/// when its device token is valid for this account. Each attempt is counted before the
/// password is checked (refused uncounted at the limit) and judged by its source's failures:
/// the device's own, else the client address's (SPEC 10).
async fn verified_user(
    a: &Accounts,
    email: &Email,
    password: &Password,
    ip: ClientIp,
    device_token: Option<String>,
    coming: Announced,
) -> Result<(User, Option<KnownDevice>), ActorError> {
    let mut coming = Some(coming);
    let mut device = match device_token {
        Some(token) => {
            let email = email.key().clone();
            a.tokens.call(CheckDeviceToken { token, email }).await?
        }
        None => None,
    };
    loop {
        let attempt = begin_attempt(a, email, ip, device.as_ref()).await?;
        let checked = look_up_and_verify(a, email, password, &mut coming).await;
        // The email now belongs to another account than the device's: the token is none,
        // and the attempt is judged again as an unknown client's.
        let foreign = match (&device, &checked) {
            (Some(d), Ok((user, _))) => user.as_ref().map(|u| u.id) != Some(d.user_id),
            _ => false,
        };
        if !foreign {
            return judge_attempt(a, attempt, checked, email, ip)
                .await
                .map(|user| (user, device));
        }
        end_attempt(a, attempt, AttemptOutcome::Abandoned).await;
        device = None;
    }
}

/// Counts an attempt from `device` (or else the client address) before its password is checked;
/// a locked-out source is refused, uncounted, and audited.
async fn begin_attempt(
    a: &Accounts,
    email: &Email,
    ip: ClientIp,
    device: Option<&KnownDevice>,
) -> Result<LoginAttempt, ActorError> {
    let source = device.map_or(AttemptSource::Address(ip), |d| {
        AttemptSource::Device(d.device_id.clone())
    });
    let email_key = email.key().clone();
    let begun = a
        .sessions
        .call(BeginLoginAttempt {
            email: email_key,
            source,
        })
        .await;
    if let Err(ActorError::LockedOut(_)) = &begun {
        let reason = match device {
            Some(_) => "device_locked_out",
            None => "locked_out",
        };
        a.audit(login_failure(email, ip, reason)).await?;
    }
    begun
}

/// The account of `email` (if any) and whether `password` is its own. Unknown email and wrong
/// password cost the same bcrypt verify, so timing tells nothing.
async fn look_up_and_verify(
    a: &Accounts,
    email: &Email,
    password: &Password,
    coming: &mut Option<Announced>,
) -> Result<(Option<User>, bool), ActorError> {
    let user = a.db.call(FindUserByEmail(email.clone())).await?;
    let hash = user.as_ref().map_or_else(
        || a.settings.dummy_hash.clone(),
        |u| u.password_hash.clone(),
    );
    // Queued from here on: no longer announced.
    drop(coming.take());
    let verified = a
        .hasher
        .call(VerifyPassword::new(password.clone(), hash))
        .await?;
    Ok((user, verified))
}

/// Ends the attempt with what the check found: the user when the password was theirs, else an
/// audited failure.
async fn judge_attempt(
    a: &Accounts,
    attempt: LoginAttempt,
    checked: Result<(Option<User>, bool), ActorError>,
    email: &Email,
    ip: ClientIp,
) -> Result<User, ActorError> {
    let user = match checked {
        Ok((Some(user), true)) => {
            end_attempt(a, attempt, AttemptOutcome::Succeeded).await;
            return Ok(user);
        }
        Ok((user, _)) => user,
        Err(e) => {
            end_attempt(a, attempt, AttemptOutcome::Abandoned).await;
            return Err(e);
        }
    };
    let failures = end_attempt(a, attempt, AttemptOutcome::Failed).await;
    let reason = match user {
        Some(_) => "bad_password",
        None => "unknown_email",
    };
    let mut entry = login_failure(email, ip, "failure")
        .detail("reason", reason)
        .detail("failures_in_window", failures as i64);
    if let Some(user) = &user {
        entry = entry.user(user.id);
    }
    a.audit(entry).await?;
    Err(ActorError::InvalidCredentials)
}

/// Opens the user's session under their credential version: a password changed while this
/// login was checking the old one is an audited failure.
async fn open_session(
    a: &Accounts,
    user: &User,
    email: &Email,
    ip: ClientIp,
    user_agent: String,
) -> Result<OpenedSession, ActorError> {
    let opened = a
        .tokens
        .call(OpenSession {
            user_id: user.id,
            role: user.role,
            credential_version: user.credential_version,
            ip,
            user_agent,
        })
        .await;
    if let Err(ActorError::InvalidCredentials) = &opened {
        let entry = login_failure(email, ip, "failure")
            .user(user.id)
            .detail("reason", "password_changed");
        a.audit(entry).await?;
    }
    opened
}

/// Stamps the login (with its audit entries); when that fails the client never gets the
/// tokens, so the session they belong to is ended. Replies with the stamp's time.
async fn stamp_login(
    a: &Accounts,
    user: &User,
    opened: &OpenedSession,
    ip: ClientIp,
) -> Result<DateTime<Utc>, ActorError> {
    let at = now_ms();
    let stamped =
        a.db.call(RecordLogin {
            user_id: user.id,
            email: user.email.clone(),
            at,
            audit: login_entries(a, user, opened, ip),
        })
        .await;
    let Err(e) = stamped else {
        return Ok(at);
    };
    let revoked = a
        .tokens
        .call(RevokeSession {
            user_id: user.id,
            session_id: opened.session_id.clone(),
            reason: EndReason::Logout,
        })
        .await;
    if let Err(revoke) = revoked {
        tracing::warn!(
            error = %crate::error::chain(&revoke),
            "a login's stamp failed and its session could not be ended; it expires by itself"
        );
    }
    Err(e)
}

/// Whether a verified hash should be made again: another cost than `BCRYPT_COST`, or a prefix
/// other than `$2b$` (the one Python's `bcrypt` and this service write).
fn needs_upgrade(hash: &str, cost: u32) -> bool {
    let current = hash
        .parse::<bcrypt::HashParts>()
        .map(|parts| parts.get_cost() == cost)
        .unwrap_or(false);
    !(hash.starts_with("$2b$") && current)
}

/// After a login (off its reply's path): a fresh `$2b$` hash at the current cost replaces the
/// one just verified, if that is still the stored one. Not a password change: the credential
/// version stays and no session ends. A failure is logged; the next login tries again.
async fn upgrade_hash(
    a: Arc<Accounts>,
    id: crate::domain::UserId,
    verified: String,
    password: crate::domain::Password,
) {
    let upgraded = async {
        let fresh = a.hasher.call(HashPassword::new(password)).await?;
        a.db.call(crate::db_queue::UpgradeHash {
            id,
            verified,
            upgraded: fresh,
        })
        .await
    }
    .await;
    match upgraded {
        Ok(true) => tracing::info!(user_id = %id, "password hash upgraded to the current cost"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %crate::error::chain(&e), "password hash not upgraded"),
    }
}

/// The login's own entry, with what the session's opening ended, in the order they happened.
fn login_entries(
    a: &Accounts,
    user: &User,
    opened: &OpenedSession,
    ip: ClientIp,
) -> Vec<AuditEntry> {
    let s = &a.settings;
    let mut entries: Vec<AuditEntry> = opened
        .expired
        .iter()
        .map(|gone| AuditEntry::session_expired(user.id, gone, s.idle_timeout))
        .collect();
    entries.extend(opened.evicted.iter().map(|victim| {
        AuditEntry::new("session.evicted", "success")
            .user(user.id)
            .actor(user.id)
            .email(&user.email)
            .ip(ip)
            .detail("session_id", victim.as_str())
            .detail("by_session_id", opened.session_id.as_str())
            .detail("policy", s.limit_policy.as_str())
    }));
    entries.push(
        AuditEntry::new("auth.login.success", "success")
            .ip(ip)
            .user(user.id)
            .actor(user.id)
            .email(&user.email)
            .detail("session_id", opened.session_id.as_str())
            .detail("evicted_sessions", opened.evicted.len() as i64),
    );
    entries
}

/// Now, to the millisecond: what is stored is what the reply says.
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_else(Utc::now)
}

pub(super) async fn refresh(a: Arc<Accounts>, m: Refresh) -> Result<TokenPair, ActorError> {
    a.sessions.call(TakeRateToken(m.ip)).await?;
    let Rotated { principal, pair } = match a.tokens.call(RotateRefresh(m.refresh_token)).await {
        Ok(rotated) => rotated,
        Err(ActorError::Token(TokenRejection::ReuseDetected {
            user_id,
            session_id,
        })) => {
            let entry = AuditEntry::new("token.refresh.reuse", "failure")
                .user(user_id)
                .ip(m.ip)
                .detail("session_id", session_id.as_str())
                .detail("effect", "session revoked");
            a.audit(entry).await?;
            let rejection = TokenRejection::ReuseDetected {
                user_id,
                session_id,
            };
            return Err(ActorError::Token(rejection));
        }
        Err(e) => return Err(e),
    };
    // The account may have gone since the session opened.
    let user = a.db.call(FindUserById(principal.user_id)).await?;
    a.usable(&principal, user).await?;
    let entry = AuditEntry::new("token.refresh", "success")
        .user(principal.user_id)
        .actor(principal.user_id)
        .ip(m.ip)
        .detail("session_id", principal.session_id.as_str());
    a.audit(entry).await?;
    Ok(pair)
}

pub(super) async fn logout(a: Arc<Accounts>, m: Logout) -> Result<(), ActorError> {
    let principal = a.tokens.call(crate::token::ValidateAccess(m.token)).await?;
    a.tokens
        .call(RevokeSession {
            user_id: principal.user_id,
            session_id: principal.session_id.clone(),
            reason: EndReason::Logout,
        })
        .await?;
    let entry = AuditEntry::new("auth.logout", "success")
        .user(principal.user_id)
        .actor(principal.user_id)
        .ip(m.ip)
        .detail("session_id", principal.session_id.as_str());
    a.audit(entry).await
}

/// One token-store check of the token, by the TokenActor of this thread; then its user as `me`
/// reads it (the cache, else the database): a token of a user gone or no longer active is not
/// active, and the role given is the user's now.
pub(super) async fn introspect(
    a: Arc<Accounts>,
    m: IntrospectToken,
) -> Result<Option<Introspection>, ActorError> {
    let Some(claims) = a.tokens.call(crate::token::Introspect(m.0)).await? else {
        return Ok(None);
    };
    let Ok(user_id) = crate::domain::UserId::parse(&claims.sub) else {
        return Ok(None);
    };
    let user = match a.cache.get(&user_id) {
        Some(hit) => Some(hit.0.clone()),
        None => a.db.call(FindUserById(user_id)).await?,
    };
    Ok(user
        .filter(|u| u.status == crate::domain::UserStatus::Active)
        .map(|u| Introspection {
            claims,
            role: u.role,
        }))
}

pub(super) async fn me(a: Arc<Accounts>, m: Me) -> Result<UserWithWallet, ActorError> {
    let principal = a.tokens.call(crate::token::ValidateAccess(m.token)).await?;
    // The cache answers most reads without the database (see `UserCache`).
    let found = match a.cache.get(&principal.user_id) {
        Some(hit) => Some(hit),
        None => a.db.call(FindUserWithWallet(principal.user_id)).await?,
    };
    match super::unusable_because(&principal, found.as_ref().map(|f| &f.0)) {
        None => found.ok_or(ActorError::NotFound("User")),
        Some(reason) => Err(a.end_session(&principal, reason).await),
    }
}
