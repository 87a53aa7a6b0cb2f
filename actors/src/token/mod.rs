//! The TokenActor: the only code that signs, checks, rotates and revokes JWTs.
//!
//! Tokens are JWTs signed with the configured key ([`keys`]: HS256 by default, EdDSA or ES256 for
//! tokens other services check from the JWK Set). Whether a token is still good is decided by
//! its session's state in the
//! [`SessionStore`] (current access and refresh `jti`, or why the session ended), read and changed
//! atomically by one operation each, so every instance sharing the store agrees at once.
pub mod keys;
pub mod messages;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use jsonwebtoken::{errors::ErrorKind, Header};

use crate::domain::{EmailKey, EndReason, Role, SessionId, UserId};
use crate::error::TokenRejection;
use crate::mailbox::{timed, ActorStats, Mailbox};
use crate::session_store::{
    AccessCheck, AccessRequest, EndAllRequest, EndRequest, OpenRequest, Opening, RotateRequest,
    Rotation, SessionInfo, SessionStore, TokenKind,
};
use crate::ActorError;
pub use keys::{audience_of, key_id, SigningAlgorithm, SigningKeys};
pub use messages::*;
use serde::de::DeserializeOwned;

/// What the TokenActor needs to know; all of it from configuration. The rules of sessions
/// (their limit, idle timeout, lifetime and reuse grace) are the session store's own
/// ([`crate::session_store::SessionRules`]).
#[derive(Clone)]
pub struct TokenSettings {
    /// The signing key and those that still verify (`JWT_SECRET_KEY`, `JWT_PREVIOUS_SECRET_KEYS`,
    /// or a key pair with `JWT_ALGORITHM`): a key dropped from them ends its tokens at once.
    pub keys: Arc<SigningKeys>,
    pub issuer: String,
    /// `JWT_AUDIENCE`: every token's `aud`, and what a token's `aud` must be.
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// `DEVICE_TOKEN_TTL`: how long a device token names its device.
    pub device_ttl: Duration,
}

pub struct TokenActor {
    settings: Arc<TokenSettings>,
    /// Tokens whose signature this actor checked (whole token → claims): a client sends the
    /// same access token with request after request, and an Ed25519 or P-256 verification costs
    /// tens of microseconds (`/auth/me` under EdDSA went from 0.47 to 0.97 of its HS256 rate;
    /// under HS256 the cache made no measurable difference, and one code path is kept).
    verified: moka::sync::Cache<String, Arc<Claims>>,
    store: SessionStore,
    stats: Arc<ActorStats>,
}

/// Starts the TokenActors: one on each HTTP worker thread, beside that thread's AccountActor,
/// each on its own connection to the session store. A token check is then answered on the
/// thread that took the request, with no hop to another thread and back; the instances share
/// nothing but their figures (`token` in `/health`), since every decision is made in the store.
#[derive(Clone)]
pub struct TokenActors {
    settings: TokenSettings,
    store: SessionStore,
    stats: Arc<ActorStats>,
    deadline: Duration,
}

impl TokenActors {
    pub fn new(
        settings: TokenSettings,
        store: SessionStore,
        stats: Arc<ActorStats>,
        deadline: Duration,
    ) -> Self {
        Self {
            settings,
            store,
            stats,
            deadline,
        }
    }

    pub fn stats(&self) -> &Arc<ActorStats> {
        &self.stats
    }

    /// Starts a TokenActor on the current thread (an HTTP worker), supervised.
    pub fn start_here(&self) -> Mailbox<TokenActor> {
        let store = self.store.for_this_thread().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no connection of its own for this thread's TokenActor");
            self.store.clone()
        });
        let (settings, stats) = (self.settings.clone(), Arc::clone(&self.stats));
        let addr = Supervisor::start(move |_| TokenActor::new(settings, store, stats));
        Mailbox::new(addr, Arc::clone(&self.stats), self.deadline)
    }
}

impl TokenActor {
    pub fn new(settings: TokenSettings, store: SessionStore, stats: Arc<ActorStats>) -> Self {
        let verified = moka::sync::Cache::builder()
            .max_capacity(VERIFIED_CAPACITY)
            .time_to_live(VERIFIED_TTL)
            .build();
        Self {
            settings: Arc::new(settings),
            verified,
            store,
            stats,
        }
    }

    /// [`TokenActor::verify`] for the claims of access and refresh tokens, through the cache of
    /// tokens already checked: a hit skips the signature (the same whole token verified before,
    /// by a key that stays until the process restarts) but not the expiry.
    fn verify_claims(&self, token: &str) -> Result<Claims, ActorError> {
        let cache = &self.verified;
        if let Some(claims) = cache.get(token) {
            if claims.exp < Utc::now().timestamp() {
                return Err(ActorError::Token(TokenRejection::Expired));
            }
            return Ok(Claims::clone(&claims));
        }
        let claims: Claims = self.verify(token)?;
        cache.insert(token.to_string(), Arc::new(claims.clone()));
        Ok(claims)
    }

    /// Checks `token` and its kind ([`TokenActor::verify`], then `typ`).
    fn decode<T: Verified + Typed>(
        &self,
        token: &str,
        expected_typ: &'static str,
    ) -> Result<T, ActorError> {
        let claims = T::verified(self, token)?;
        if claims.typ() != expected_typ {
            return Err(ActorError::Token(TokenRejection::WrongType(expected_typ)));
        }
        self.check_audience(&claims)?;
        Ok(claims)
    }

    /// A token's `aud` is its kind's ([`audience_of`]); tokens without one (HS256, earlier
    /// versions) pass.
    fn check_audience<T: Typed>(&self, claims: &T) -> Result<(), ActorError> {
        match claims.aud() {
            Some(aud) if aud != audience_of(&self.settings.audience, claims.typ()) => {
                Err(ActorError::Token(TokenRejection::Invalid))
            }
            _ => Ok(()),
        }
    }

    /// Checks `token` with the key its header's `kid` names (a token without one, signed before
    /// keys had ids, with the current key), by that key's algorithm only: a header cannot choose
    /// how it is checked. Then `exp`, `iss` and `aud`.
    fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, ActorError> {
        let rejection = |e: jsonwebtoken::errors::Error| {
            ActorError::Token(match e.kind() {
                ErrorKind::ExpiredSignature => TokenRejection::Expired,
                _ => TokenRejection::Invalid,
            })
        };
        let header = jsonwebtoken::decode_header(token).map_err(rejection)?;
        let (key, validation) = self
            .settings
            .keys
            .verifier(header.kid.as_deref(), header.alg)
            .ok_or(ActorError::Token(TokenRejection::Invalid))?;
        Ok(jsonwebtoken::decode::<T>(token, key, validation)
            .map_err(rejection)?
            .claims)
    }

    /// Signs `claims` with the current key, its `kid` in the header.
    fn sign<C: serde::Serialize>(&self, claims: &C) -> Result<String, ActorError> {
        let keys = &self.settings.keys;
        let (key, algorithm) = keys.signing();
        let header = Header {
            kid: Some(keys.kid().to_string()),
            ..Header::new(algorithm)
        };
        jsonwebtoken::encode(&header, claims, key)
            .map_err(|e| ActorError::internal("signing a token", e))
    }

    fn sign_pair(
        &self,
        user_id: &UserId,
        role: Role,
        sid: &SessionId,
    ) -> Result<(TokenPair, String, String), ActorError> {
        let now = Utc::now().timestamp();
        let claims = |typ: &str, ttl: Duration| Claims {
            sub: user_id.to_hex(),
            sid: sid.to_string(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            typ: typ.to_string(),
            role: role.as_str().to_string(),
            iat: now,
            exp: now + ttl.as_secs() as i64,
            iss: self.settings.issuer.clone(),
            aud: Some(audience_of(&self.settings.audience, typ)),
        };
        let access = claims("access", self.settings.access_ttl);
        let refresh = claims("refresh", self.settings.refresh_ttl);
        let pair = TokenPair {
            access_token: self.sign(&access)?,
            refresh_token: self.sign(&refresh)?,
            expires_in: self.settings.access_ttl.as_secs(),
        };
        Ok((pair, access.jti, refresh.jti))
    }
}

/// How a kind of claims is checked: those of access and refresh tokens through the cache of
/// verified tokens, a device token's (one per login) directly.
trait Verified: Sized {
    fn verified(actor: &TokenActor, token: &str) -> Result<Self, ActorError>;
}

impl Verified for Claims {
    fn verified(actor: &TokenActor, token: &str) -> Result<Self, ActorError> {
        actor.verify_claims(token)
    }
}

impl Verified for DeviceClaims {
    fn verified(actor: &TokenActor, token: &str) -> Result<Self, ActorError> {
        actor.verify(token)
    }
}

/// Claims that say which kind of token they are, and for whom: a token of one kind never works
/// as another.
trait Typed {
    fn typ(&self) -> &str;
    fn aud(&self) -> Option<&str>;
}

impl Typed for Claims {
    fn typ(&self) -> &str {
        &self.typ
    }
    fn aud(&self) -> Option<&str> {
        self.aud.as_deref()
    }
}

impl Typed for DeviceClaims {
    fn typ(&self) -> &str {
        &self.typ
    }
    fn aud(&self) -> Option<&str> {
        self.aud.as_deref()
    }
}

/// What a device token carries of its account's email key: the first 8 bytes of SHA-256 over a
/// fixed label and the key, in hex (the token is readable by its holder; the key need not be).
fn email_fingerprint(email: &EmailKey) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"cs-user-management device email\0")
        .chain_update(email.as_str().as_bytes())
        .finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Verified tokens kept by each TokenActor (one per HTTP worker), and for how long at most (a
/// token's own `exp` is checked on every hit).
const VERIFIED_CAPACITY: u64 = 10_000;
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// The longest device token checked: anything longer is none, unread.
const DEVICE_TOKEN_MAX_LEN: usize = 2048;

/// The principal named by checked claims.
fn principal(claims: &Claims) -> Result<Principal, ActorError> {
    let invalid = || ActorError::Token(TokenRejection::Invalid);
    Ok(Principal {
        user_id: UserId::parse(&claims.sub).map_err(|_| invalid())?,
        session_id: SessionId::parse(&claims.sid).map_err(|_| invalid())?,
        role: Role::parse(&claims.role).map_err(|_| invalid())?,
        credential_version: 0,
    })
}

fn ended(reason: EndReason) -> ActorError {
    ActorError::Token(TokenRejection::Ended(reason))
}

// Every message comes wrapped with the span it was sent from.
crate::traced!(TokenActor: CheckDeviceToken, EndDevices, Introspect, IssueDeviceToken, ListSessions, OpenSession, RevokeSession, RevokeUserSessions, RotateRefresh, ValidateAccess);

impl Actor for TokenActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.stats.capacity + 1);
        self.stats.set_alive(true);
    }

    // No `stopped` hook: the instances share their figures, and one worker's actor stopping
    // (its thread shutting down) says nothing of the others'. A failure shows as a restart.
}

impl Supervised for TokenActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.stats.count_restart();
    }
}

impl Handler<OpenSession> for TokenActor {
    type Result = ResponseActFuture<Self, Result<OpenedSession, ActorError>>;

    /// Signs the pair and stores its `jti`s with the new session in one atomic operation, so
    /// no concurrent sign-in or password change can slip between opening and binding.
    fn handle(&mut self, msg: OpenSession, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let session_id = SessionId::new();
        let signed = self.sign_pair(&msg.user_id, msg.role, &session_id);
        let store = self.store.clone();
        timed("token", timer, async move {
            let (pair, access_jti, refresh_jti) = signed?;
            let opening = store
                .open_session(OpenRequest {
                    sid: session_id.clone(),
                    uid: msg.user_id,
                    role: msg.role,
                    now_ms: Utc::now().timestamp_millis(),
                    access_jti,
                    refresh_jti,
                    credential_version: msg.credential_version,
                    ip: msg.ip.to_string(),
                    user_agent: msg.user_agent,
                })
                .await?;
            match opening {
                Opening::Opened { evicted, expired } => Ok(OpenedSession {
                    pair,
                    session_id,
                    evicted,
                    expired,
                }),
                Opening::Rejected => Err(ActorError::SessionLimit),
                Opening::Stale => Err(ActorError::InvalidCredentials),
            }
        })
    }
}

impl Handler<ValidateAccess> for TokenActor {
    type Result = ResponseActFuture<Self, Result<Principal, ActorError>>;

    fn handle(&mut self, msg: ValidateAccess, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let decoded = self.decode(&msg.0, "access").and_then(|c| {
            let p = principal(&c)?;
            Ok((c, p))
        });
        let store = self.store.clone();
        timed("token", timer, async move {
            let (claims, principal) = decoded?;
            let check = store
                .check_access(AccessRequest {
                    sid: principal.session_id.clone(),
                    uid: principal.user_id,
                    kind: TokenKind::Access,
                    jti: claims.jti,
                    now_ms: Utc::now().timestamp_millis(),
                })
                .await?;
            match check {
                AccessCheck::Live { credential_version } => Ok(Principal {
                    credential_version,
                    ..principal
                }),
                AccessCheck::Ended(reason) => Err(ended(reason)),
                AccessCheck::Superseded => Err(ActorError::Token(TokenRejection::Superseded)),
                AccessCheck::Invalid => Err(ActorError::Token(TokenRejection::Invalid)),
            }
        })
    }
}

impl Handler<Introspect> for TokenActor {
    type Result = ResponseActFuture<Self, Result<Option<Claims>, ActorError>>;

    /// One token-store check, as for `/auth/me`: of the access or the refresh token, whichever
    /// kind the token says it is (a device token, or anything unreadable, is not active).
    fn handle(&mut self, msg: Introspect, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let decoded = self.verify_claims(&msg.0).and_then(|c| {
            self.check_audience(&c)?;
            let kind = match c.typ.as_str() {
                "access" => TokenKind::Access,
                "refresh" => TokenKind::Refresh,
                _ => return Err(ActorError::Token(TokenRejection::Invalid)),
            };
            Ok((principal(&c)?, c, kind))
        });
        let store = self.store.clone();
        timed("token", timer, async move {
            let Ok((principal, claims, kind)) = decoded else {
                return Ok(None);
            };
            let check = store
                .check_access(AccessRequest {
                    sid: principal.session_id,
                    uid: principal.user_id,
                    kind,
                    jti: claims.jti.clone(),
                    now_ms: Utc::now().timestamp_millis(),
                })
                .await?;
            Ok(matches!(check, AccessCheck::Live { .. }).then_some(claims))
        })
    }
}

impl Handler<RotateRefresh> for TokenActor {
    type Result = ResponseActFuture<Self, Result<Rotated, ActorError>>;

    fn handle(&mut self, msg: RotateRefresh, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let prepared = self.decode(&msg.0, "refresh").and_then(|claims| {
            let principal = principal(&claims)?;
            let signed =
                self.sign_pair(&principal.user_id, principal.role, &principal.session_id)?;
            Ok((claims, principal, signed))
        });
        let store = self.store.clone();
        timed("token", timer, async move {
            let (claims, principal, (pair, access_jti, refresh_jti)) = prepared?;
            let successor = serde_json::to_string(&pair)
                .map_err(|e| ActorError::internal("keeping the successor pair", e))?;
            let rotation = store
                .rotate(RotateRequest {
                    sid: principal.session_id.clone(),
                    uid: principal.user_id,
                    presented_jti: claims.jti,
                    access_jti,
                    refresh_jti,
                    now_ms: Utc::now().timestamp_millis(),
                    successor,
                })
                .await?;
            let (credential_version, pair) = match rotation {
                Rotation::Rotated { credential_version } => (credential_version, pair),
                Rotation::Grace {
                    pair: previous,
                    credential_version,
                } => {
                    let pair = serde_json::from_str(&previous)
                        .map_err(|e| ActorError::internal("keeping the successor pair", e))?;
                    (credential_version, pair)
                }
                Rotation::Reuse => {
                    return Err(ActorError::Token(TokenRejection::ReuseDetected {
                        user_id: principal.user_id,
                        session_id: principal.session_id,
                    }))
                }
                Rotation::Ended(reason) => return Err(ended(reason)),
                Rotation::Invalid => return Err(ActorError::Token(TokenRejection::Invalid)),
            };
            let principal = Principal {
                credential_version,
                ..principal
            };
            Ok(Rotated { principal, pair })
        })
    }
}

impl Handler<RevokeSession> for TokenActor {
    type Result = ResponseActFuture<Self, Result<bool, ActorError>>;

    fn handle(&mut self, msg: RevokeSession, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        timed("token", timer, async move {
            store
                .end_session(EndRequest {
                    uid: msg.user_id,
                    sid: msg.session_id,
                    reason: msg.reason,
                })
                .await
        })
    }
}

impl Handler<ListSessions> for TokenActor {
    type Result = ResponseActFuture<Self, Result<Vec<SessionInfo>, ActorError>>;

    fn handle(&mut self, msg: ListSessions, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        timed("token", timer, async move {
            store
                .list_sessions(msg.0, Utc::now().timestamp_millis())
                .await
        })
    }
}

impl Handler<RevokeUserSessions> for TokenActor {
    type Result = ResponseActFuture<Self, Result<usize, ActorError>>;

    fn handle(&mut self, msg: RevokeUserSessions, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        timed("token", timer, async move {
            store
                .end_user_sessions(EndAllRequest {
                    uid: msg.user_id,
                    reason: msg.reason,
                    keep: msg.keep,
                    credential_version: msg.credential_version,
                })
                .await
                .map(|ended| ended.len())
        })
    }
}

impl Handler<IssueDeviceToken> for TokenActor {
    type Result = ResponseActFuture<Self, Result<String, ActorError>>;

    fn handle(&mut self, msg: IssueDeviceToken, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let now = Utc::now();
        // A known device keeps its id and its first sign-in, so an end of the user's devices
        // while this login ran ends the token it gets too.
        let (did, since_ms) = match msg.device {
            Some(known) => (known.device_id, known.since_ms),
            None => (
                uuid::Uuid::new_v4().simple().to_string(),
                now.timestamp_millis(),
            ),
        };
        let claims = DeviceClaims {
            sub: msg.user_id.to_hex(),
            did,
            ek: email_fingerprint(&msg.email),
            typ: "device".into(),
            iat: now.timestamp(),
            since_ms,
            exp: now.timestamp() + self.settings.device_ttl.as_secs() as i64,
            iss: self.settings.issuer.clone(),
            aud: Some(audience_of(&self.settings.audience, "device")),
        };
        let signed = self.sign(&claims);
        timed("token", timer, async move { signed })
    }
}

impl Handler<CheckDeviceToken> for TokenActor {
    type Result = ResponseActFuture<Self, Result<Option<KnownDevice>, ActorError>>;

    fn handle(&mut self, msg: CheckDeviceToken, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let device = (msg.token.len() <= DEVICE_TOKEN_MAX_LEN)
            .then(|| self.decode::<DeviceClaims>(&msg.token, "device").ok())
            .flatten()
            .filter(|c| c.ek == email_fingerprint(&msg.email))
            .and_then(|c| {
                let user_id = UserId::parse(&c.sub).ok()?;
                Some((user_id, c.did, c.since_ms))
            });
        let store = self.store.clone();
        timed("token", timer, async move {
            let Some((user_id, device_id, since_ms)) = device else {
                return Ok(None);
            };
            let now = Utc::now().timestamp_millis();
            let ended = store.devices_ended_at(user_id, now).await?;
            if ended.is_some_and(|at| since_ms <= at) {
                return Ok(None);
            }
            Ok(Some(KnownDevice {
                user_id,
                device_id,
                since_ms,
            }))
        })
    }
}

impl Handler<EndDevices> for TokenActor {
    type Result = ResponseActFuture<Self, Result<(), ActorError>>;

    fn handle(&mut self, msg: EndDevices, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let store = self.store.clone();
        timed("token", timer, async move {
            store
                .end_devices(msg.0, Utc::now().timestamp_millis())
                .await
        })
    }
}

#[cfg(feature = "fault-injection")]
crate::inject_panic_handler!(TokenActor, "token");
