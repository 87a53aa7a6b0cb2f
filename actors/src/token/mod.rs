//! The TokenActor: the only code that signs, checks, rotates and revokes JWTs.
//!
//! Tokens are HS256 JWTs. Whether a token is still good is decided by its session's state in
//! Redis (current access and refresh `jti`, or why the session ended), read and changed by one
//! Lua script per operation, so every instance sharing the Redis agrees at once.
pub mod messages;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use redis::aio::ConnectionManager;
use redis::Value;

use crate::domain::{EndReason, Role, SessionId, UserId};
use crate::error::TokenRejection;
use crate::mailbox::{guarded, ActorStats};
use crate::probe::Dependency;
use crate::redis_keys::Keys;
use crate::scripts;
use crate::ActorError;
pub use messages::*;

/// What the TokenActor needs to know; all of it from configuration.
#[derive(Clone)]
pub struct TokenSettings {
    pub secret: secrecy::SecretString,
    pub issuer: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Idle time after which a session is over (`session_timeout`).
    pub idle_timeout: Duration,
    /// `REFRESH_REUSE_GRACE`: how long a just-rotated refresh token still yields its successor.
    pub reuse_grace: Duration,
}

pub struct TokenActor {
    settings: Arc<TokenSettings>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    redis: ConnectionManager,
    keys: Keys,
    stats: Arc<ActorStats>,
    redis_state: Arc<Dependency>,
    probe_interval: Duration,
}

impl TokenActor {
    pub fn new(
        settings: TokenSettings,
        redis: ConnectionManager,
        keys: Keys,
        stats: Arc<ActorStats>,
        redis_state: Arc<Dependency>,
        probe_interval: Duration,
    ) -> Self {
        use secrecy::ExposeSecret;
        let secret = settings.secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            settings: Arc::new(settings),
            redis,
            keys,
            stats,
            redis_state,
            probe_interval,
        }
    }

    fn decode(&self, token: &str, expected_typ: &'static str) -> Result<Claims, ActorError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                ActorError::Token(match e.kind() {
                    ErrorKind::ExpiredSignature => TokenRejection::Expired,
                    _ => TokenRejection::Invalid,
                })
            })?;
        if data.claims.typ != expected_typ {
            return Err(ActorError::Token(TokenRejection::WrongType(expected_typ)));
        }
        Ok(data.claims)
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
        };
        let access = claims("access", self.settings.access_ttl);
        let refresh = claims("refresh", self.settings.refresh_ttl);
        let header = Header::new(Algorithm::HS256);
        let sign = |c: &Claims| {
            jsonwebtoken::encode(&header, c, &self.encoding)
                .map_err(|e| ActorError::Internal(format!("jwt encode: {e}")))
        };
        let pair = TokenPair {
            access_token: sign(&access)?,
            refresh_token: sign(&refresh)?,
            expires_in: self.settings.access_ttl.as_secs(),
        };
        Ok((pair, access.jti, refresh.jti))
    }
}

/// The principal named by checked claims.
fn principal(claims: &Claims) -> Result<Principal, ActorError> {
    let invalid = || ActorError::Token(TokenRejection::Invalid);
    Ok(Principal {
        user_id: UserId::parse(&claims.sub).map_err(|_| invalid())?,
        session_id: SessionId::parse(&claims.sid).map_err(|_| invalid())?,
        role: Role::parse(&claims.role).map_err(|_| invalid())?,
    })
}

/// Reads a script's `{status, arg?}` reply.
fn script_reply(value: Value) -> Result<(String, Option<String>), ActorError> {
    let parts: Vec<String> = redis::from_redis_value(value)
        .map_err(|e| ActorError::Internal(format!("unexpected script reply: {e}")))?;
    let mut it = parts.into_iter();
    let status = it.next().unwrap_or_default();
    Ok((status, it.next()))
}

fn ended(reason: Option<String>) -> ActorError {
    let reason = reason
        .as_deref()
        .and_then(EndReason::parse)
        .unwrap_or(EndReason::Expired);
    ActorError::Token(TokenRejection::Ended(reason))
}

impl Actor for TokenActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.stats.capacity + 1);
        self.stats.set_alive(true);
        let redis = self.redis.clone();
        self.redis_state.watch(self.probe_interval, move || {
            let mut redis = redis.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut redis)
                    .await
                    .map(|_| ())
                    .map_err(ActorError::redis)
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stats.set_alive(false);
    }
}

impl Supervised for TokenActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.stats.count_restart();
    }
}

impl Handler<IssueTokens> for TokenActor {
    type Result = Result<IssuedTokens, ActorError>;

    /// Signing only: the SessionActor stores the `jti`s with the session it opens, in the same
    /// script, so no concurrent sign-in can slip between opening and binding.
    fn handle(&mut self, msg: IssueTokens, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let session_id = SessionId::new();
        let result = self.sign_pair(&msg.user_id, msg.role, &session_id).map(
            |(pair, access_jti, refresh_jti)| IssuedTokens {
                pair,
                session_id,
                access_jti,
                refresh_jti,
            },
        );
        timer.finish(&result);
        result
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
        let mut redis = self.redis.clone();
        let keys = self.keys.clone();
        let idle_ms = self.settings.idle_timeout.as_millis() as i64;
        guarded("token", async move {
            let result = async {
                let (claims, principal) = decoded?;
                let sid = &principal.session_id;
                let reply: Value = scripts::CHECK_ACCESS
                    .key(keys.session(sid))
                    .key(keys.ended(sid))
                    .key(keys.activity())
                    .arg(sid.as_str())
                    .arg(&claims.sub)
                    .arg(&claims.jti)
                    .arg(Utc::now().timestamp_millis())
                    .arg(idle_ms)
                    .invoke_async(&mut redis)
                    .await
                    .map_err(ActorError::redis)?;
                match script_reply(reply)? {
                    (s, _) if s == "ok" => Ok(principal),
                    (s, reason) if s == "ended" => Err(ended(reason)),
                    (s, _) if s == "superseded" => {
                        Err(ActorError::Token(TokenRejection::Superseded))
                    }
                    _ => Err(ActorError::Token(TokenRejection::Invalid)),
                }
            }
            .await;
            timer.finish(&result);
            result
        })
    }
}

impl Handler<RotateRefresh> for TokenActor {
    type Result = ResponseActFuture<Self, Result<(Principal, TokenPair), ActorError>>;

    fn handle(&mut self, msg: RotateRefresh, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let prepared = self.decode(&msg.0, "refresh").and_then(|claims| {
            let principal = principal(&claims)?;
            let signed =
                self.sign_pair(&principal.user_id, principal.role, &principal.session_id)?;
            Ok((claims, principal, signed))
        });
        let mut redis = self.redis.clone();
        let keys = self.keys.clone();
        let s = Arc::clone(&self.settings);
        guarded("token", async move {
            let result = async {
                let (claims, principal, (pair, ajti, rjti)) = prepared?;
                let sid = &principal.session_id;
                let successor = serde_json::to_string(&pair)
                    .map_err(|e| ActorError::Internal(format!("successor pair: {e}")))?;
                let reply: Value = scripts::ROTATE_REFRESH
                    .key(keys.session(sid))
                    .key(keys.ended(sid))
                    .key(keys.activity())
                    .key(keys.user_sessions(&principal.user_id))
                    .arg(sid.as_str())
                    .arg(&claims.sub)
                    .arg(&claims.jti)
                    .arg(ajti)
                    .arg(rjti)
                    .arg(Utc::now().timestamp_millis())
                    .arg(s.idle_timeout.as_millis() as i64)
                    .arg(s.reuse_grace.as_millis() as i64)
                    .arg(successor)
                    .arg(s.refresh_ttl.as_secs().max(1))
                    .arg(s.refresh_ttl.as_secs().max(1))
                    .invoke_async(&mut redis)
                    .await
                    .map_err(ActorError::redis)?;
                match script_reply(reply)? {
                    (st, _) if st == "ok" => Ok((principal, pair)),
                    (st, Some(previous)) if st == "grace" => {
                        let pair = serde_json::from_str(&previous)
                            .map_err(|e| ActorError::Internal(format!("successor pair: {e}")))?;
                        Ok((principal, pair))
                    }
                    (st, _) if st == "reuse" => {
                        Err(ActorError::Token(TokenRejection::ReuseDetected {
                            user_id: principal.user_id.to_hex(),
                            session_id: sid.to_string(),
                        }))
                    }
                    (st, reason) if st == "ended" => Err(ended(reason)),
                    _ => Err(ActorError::Token(TokenRejection::Invalid)),
                }
            }
            .await;
            timer.finish(&result);
            result
        })
    }
}

impl Handler<RevokeSession> for TokenActor {
    type Result = ResponseActFuture<Self, Result<bool, ActorError>>;

    fn handle(&mut self, msg: RevokeSession, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let mut redis = self.redis.clone();
        let keys = self.keys.clone();
        let ttl = self.settings.refresh_ttl.as_secs().max(1);
        guarded("token", async move {
            let sid = &msg.session_id;
            let result = scripts::END_SESSION
                .key(keys.session(sid))
                .key(keys.ended(sid))
                .key(keys.activity())
                .key(keys.user_sessions(&msg.user_id))
                .arg(sid.as_str())
                .arg(msg.reason.as_str())
                .arg(ttl)
                .invoke_async::<i64>(&mut redis)
                .await
                .map(|n| n == 1)
                .map_err(ActorError::redis);
            timer.finish(&result);
            result
        })
    }
}

impl Handler<RevokeUserSessions> for TokenActor {
    type Result = ResponseActFuture<Self, Result<usize, ActorError>>;

    fn handle(&mut self, msg: RevokeUserSessions, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start();
        let mut redis = self.redis.clone();
        let keys = self.keys.clone();
        let ttl = self.settings.refresh_ttl.as_secs().max(1);
        guarded("token", async move {
            let keep = msg.keep.as_ref().map_or("", |s| s.as_str()).to_string();
            let result = scripts::END_USER_SESSIONS
                .key(keys.user_sessions(&msg.user_id))
                .key(keys.activity())
                .arg(msg.reason.as_str())
                .arg(ttl)
                .arg(keys.session_prefix())
                .arg(keys.ended_prefix())
                .arg(keep)
                .invoke_async::<Vec<String>>(&mut redis)
                .await
                .map(|ended| ended.len())
                .map_err(ActorError::redis);
            timer.finish(&result);
            result
        })
    }
}

#[cfg(feature = "fault-injection")]
crate::inject_panic_handler!(TokenActor, "token");
