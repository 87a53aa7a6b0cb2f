//! The AccountActor: the one place each account workflow runs, start to end.
//!
//! An HTTP handler parses its input and sends one message here; the workflow (who may do what,
//! the lockout, the password check, the session, the audit trail) runs in this actor and asks
//! the actors that own the state: the DbQueueActor (users, wallets, audit), the TokenActor
//! (sessions and their tokens), the SessionActor (the lockout) and the hasher pool (bcrypt).
//! Every invariant that spans a check and an act is one atomic step where its state lives: the
//! lockout's check-and-count is one store operation, a status or role change is a
//! compare-and-set in the database under the caller's right, a session opens only under the
//! credential version its password was checked against. So the workflows need no lock of their
//! own, run concurrently (their handlers interleave), and hold across instances.
//!
//! One AccountActor runs on each HTTP worker thread, so a handler reaches it without a thread
//! hop, and beside it that thread's TokenActor (see [`TokenActors`]), so checking a token does
//! not hop either; they share their figures (`account` and `token` in `/health`).
mod admin;
pub mod messages;
mod sessions;
mod sign_in;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::db_queue::{DbQueue, FindUserById, Guard, RegisterUser, UserCache, Written};
use crate::domain::{AuditEntry, EndReason, NewUser, Registered, Role, User, UserId, UserStatus};
use crate::error::{Refusal, TokenRejection};
use crate::hasher::HasherActor;
use crate::mailbox::{timed, ActorStats, Mailbox};
use crate::session::SessionActor;
use crate::session_store::LimitPolicy;
use crate::token::{Principal, RevokeSession, TokenActor, TokenActors, ValidateAccess};
use crate::ActorError;
pub use messages::*;

/// How often a workflow reads again and decides again when its compare-and-set finds the
/// account changed under it, before answering 409.
const WRITE_ATTEMPTS: usize = 3;

/// What the workflows need to know; all of it from configuration.
#[derive(Clone)]
pub struct AccountSettings {
    pub initial_balance: i64,
    /// A bcrypt hash of a random password at the configured cost: a login for an unknown email
    /// verifies against it, so both failures cost the same time.
    pub dummy_hash: String,
    /// For the audit entries of sessions a login ended.
    pub idle_timeout: Duration,
    pub limit_policy: LimitPolicy,
    /// `BCRYPT_COST`: a hash of another cost (or a `$2a$`/`$2y$` one) is replaced at login.
    pub bcrypt_cost: u32,
    /// How many users one slice of a search reads (`actors.search_slice`).
    pub search_slice: u32,
}

/// The actors one AccountActor's workflows ask (the TokenActor its own thread's), and the
/// settings.
pub struct Accounts {
    pub db: DbQueue,
    pub tokens: Mailbox<TokenActor>,
    pub sessions: Mailbox<SessionActor>,
    pub hasher: Mailbox<HasherActor>,
    /// Read-only view of the DbQueueActor's user cache, for `Me`.
    pub cache: UserCache,
    pub settings: AccountSettings,
}

/// Starts the AccountActors: one on each HTTP worker thread, each with a TokenActor of its own
/// thread beside it; the other actors are shared.
#[derive(Clone)]
pub struct AccountActors {
    pub db: DbQueue,
    pub tokens: TokenActors,
    pub sessions: Mailbox<SessionActor>,
    pub hasher: Mailbox<HasherActor>,
    pub cache: UserCache,
    pub settings: AccountSettings,
    /// The AccountActors' shared figures.
    pub stats: Arc<ActorStats>,
}

impl AccountActors {
    /// Starts an AccountActor, and the TokenActor it asks, on the current thread (an HTTP
    /// worker), both supervised.
    pub fn start_here(&self, deadline: Duration) -> Mailbox<AccountActor> {
        let accounts = Arc::new(Accounts {
            db: self.db.clone(),
            tokens: self.tokens.start_here(),
            sessions: self.sessions.clone(),
            hasher: self.hasher.clone(),
            cache: self.cache.clone(),
            settings: self.settings.clone(),
        });
        let stats = Arc::clone(&self.stats);
        let addr = Supervisor::start(move |_| AccountActor { accounts, stats });
        Mailbox::new(addr, Arc::clone(&self.stats), deadline)
    }
}

impl Accounts {
    /// A new account and its wallet (and its audit entry), in one database transaction.
    async fn insert(
        &self,
        user: NewUser,
        guard: Guard,
        audit: AuditEntry,
    ) -> Result<Written<Registered>, ActorError> {
        let initial_balance = self.settings.initial_balance;
        self.db
            .call(RegisterUser {
                user,
                initial_balance,
                guard,
                audit,
            })
            .await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), ActorError> {
        self.db.call(crate::db_queue::WriteAudit(entry)).await
    }

    /// The account behind a checked token, as stored now. A deleted or non-active account ends
    /// the session presenting it: 401 saying why. Roles are read here, never from the token,
    /// so a demotion takes effect at once.
    async fn account(&self, principal: &Principal) -> Result<User, ActorError> {
        let user = self.db.call(FindUserById(principal.user_id)).await?;
        self.usable(principal, user).await
    }

    /// `user` if it exists, is active and its password has not changed since the session
    /// opened; otherwise the session ends and the caller gets 401 saying why.
    async fn usable(&self, principal: &Principal, user: Option<User>) -> Result<User, ActorError> {
        match unusable_because(principal, user.as_ref()) {
            None => user.ok_or(ActorError::NotFound("User")),
            Some(reason) => Err(self.end_session(principal, reason).await),
        }
    }

    /// Ends the caller's session for `reason`; the 401 saying why.
    async fn end_session(&self, principal: &Principal, reason: EndReason) -> ActorError {
        let revoked = self
            .tokens
            .call(RevokeSession {
                user_id: principal.user_id,
                session_id: principal.session_id.clone(),
                reason,
            })
            .await;
        match revoked {
            Ok(_) => ActorError::Token(TokenRejection::Ended(reason)),
            Err(e) => e,
        }
    }

    /// The signed-in caller: the checked token and the account as stored now.
    async fn caller(&self, token: String) -> Result<(Principal, User), ActorError> {
        let principal = self.tokens.call(ValidateAccess(token)).await?;
        let user = self.account(&principal).await?;
        Ok((principal, user))
    }

    /// The caller, who must be an active administrator (403 otherwise).
    async fn admin(&self, token: String) -> Result<User, ActorError> {
        let (_, user) = self.caller(token).await?;
        if user.role != Role::Admin {
            return Err(ActorError::Forbidden(Refusal::AdminRequired));
        }
        Ok(user)
    }
}

/// Why a session may no longer act for `user` (as stored now), if it may not: the account is
/// gone or not active, or its password changed after the session opened (the store ends such
/// sessions when the change is made; this catches one whose ending failed).
fn unusable_because(principal: &Principal, user: Option<&User>) -> Option<EndReason> {
    match user {
        None => Some(EndReason::Deleted),
        Some(user) if user.status != UserStatus::Active => Some(EndReason::Suspended),
        Some(user) if user.credential_version > principal.credential_version => {
            Some(EndReason::PasswordChanged)
        }
        Some(_) => None,
    }
}

/// The caller may act on `target`: it is their own account, or they are an administrator.
fn may_act_on(caller: &User, target: &UserId) -> Result<(), ActorError> {
    if caller.id != *target && caller.role != Role::Admin {
        return Err(ActorError::Forbidden(Refusal::OwnAccountOnly));
    }
    Ok(())
}

pub struct AccountActor {
    accounts: Arc<Accounts>,
    stats: Arc<ActorStats>,
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.stats.capacity + 1);
        self.stats.set_alive(true);
    }
}

impl Supervised for AccountActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.stats.count_restart();
    }
}

/// Each message runs its workflow (an `async fn(Arc<Accounts>, M)`) as this actor's handler;
/// handlers interleave, a panic becomes a 503 and restarts the actor.
macro_rules! workflows {
    ($($msg:ty => $reply:ty = $run:path;)*) => {
    // Every message comes wrapped with the span it was sent from.
    crate::traced!(AccountActor: $($msg),*);
    $(
        impl Handler<$msg> for AccountActor {
            type Result = ResponseActFuture<Self, Result<$reply, ActorError>>;

            fn handle(&mut self, msg: $msg, _: &mut Self::Context) -> Self::Result {
                let timer = self.stats.start();
                let accounts = Arc::clone(&self.accounts);
                timed("account", timer, async move {
                    $run(accounts, msg).await
                })
            }
        }
    )*};
}

workflows! {
    Register => Registered = sign_in::register;
    Login => SignedIn = sign_in::login;
    Refresh => crate::token::TokenPair = sign_in::refresh;
    Logout => () = sign_in::logout;
    Me => crate::db_queue::UserWithWallet = sign_in::me;
    IntrospectToken => Option<Introspection> = sign_in::introspect;
    CreateAccount => User = admin::create;
    GetAccount => User = admin::get;
    UpdateAccount => User = admin::update;
    DeleteAccount => () = admin::delete;
    SearchAccounts => crate::domain::Page<User> = admin::search;
    ReadAudit => crate::domain::Page<crate::domain::AuditRecord> = admin::read_audit;
    RequireAdmin => User = admin::require_admin;
    ListMySessions => MySessions = sessions::list;
    EndMySession => () = sessions::end_one;
    EndMyOtherSessions => usize = sessions::end_others;
    EndUserSessions => usize = sessions::end_users;
    LiftUserLockout => u64 = sessions::lift_lockout;
}

#[cfg(feature = "fault-injection")]
crate::inject_panic_handler!(AccountActor, "account");
