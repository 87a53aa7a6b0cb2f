//! The actors of the user-management service and the types they speak.
//!
//! Map of the crate:
//! - [`account`]: the **AccountActor**, where each account workflow (register, login, refresh,
//!   logout, the signed-in user, create, read, update, delete, search, the audit trail) runs
//!   from start to end: an HTTP handler sends it one message. It decides who may do what and
//!   asks the actors below, whose own operations are atomic where the state lives.
//! - [`domain`]: validated input types (`Email`, `Username`, `Password`, `UserId`, `SessionId`)
//!   and the records the service returns (`User`, `Wallet`, `AuditEntry`).
//! - [`db_queue`]: the **DbQueueActor**, the only code that touches the database (a
//!   [`db_queue::Store`]: MongoDB, or the embedded SQLite file). Every operation is a typed
//!   message taken in FIFO order, in batches that carry what is queued in few round trips
//!   (group commit: the outcome is that of running the batch's operations one by one).
//! - [`token`]: the **TokenActor**, the only code that signs, checks, rotates and revokes JWTs.
//!   Revocation state lives in the [`session_store::SessionStore`] (Redis or embedded).
//! - [`token`] also opens sessions (signing their pair and storing it with the session in one
//!   atomic step, under the concurrent-session limit and the user's credential version), so
//!   token ids never leave it.
//! - [`session`]: the **SessionActor**: the idle-session sweep and the failed-login lockout
//!   (each attempt counted before its password is checked), in the same store.
//! - Where SPEC's card gives the SessionActor `max_concurrent_sessions`, the limit is enforced
//!   in [`token`]'s `OpenSession`, by the store's one atomic step that counts the user's
//!   sessions, evicts (or refuses) and stores the new one with its token ids. A check in another
//!   actor before that step would race: two logins would both see room.
//! - [`session_store`]: token and session state on Redis (one Lua script per change) or in the
//!   embedded SQLite file (one transaction per change), the two under one key scheme
//!   ([`session_store::keys`]); the Redis internals (its connections, single or Cluster, and the
//!   Lua scripts) live under `session_store/redis/`, used by that store only. The store holds
//!   the rules every session follows ([`session_store::SessionRules`]: the limit and its
//!   policy, lifetimes, idle timeout, reuse grace), given once at start-up. Every multi-key
//!   change is one atomic script, so limits and revocations hold across service instances.
//!   [`sqlite`] is the embedded backend's connection.
//! - [`hasher`]: the bcrypt pool, threads sized to the cores, so hashing never runs on an HTTP
//!   worker thread; a vector's worth of queued passwords is verified (or hashed) as one batch.
//! - [`mailbox`]: [`mailbox::Mailbox`], the bounded, instrumented way every caller reaches an
//!   actor: it rejects at once when the mailbox is full, enforces a deadline and keeps the
//!   figures `/health` reports.
//! - [`probe`]: each connection-owning actor pings its backend on a timer, off its mailbox, and
//!   publishes up/down for `/health`.
//!
//! Messages flow one way: the HTTP layer sends to the AccountActor, which sends to the others;
//! the SessionActor's sweep sends audit entries to the DbQueueActor. No actor knows about HTTP.
#![deny(clippy::unwrap_used)]

pub mod account;
pub mod db_queue;
pub mod domain;
pub mod error;
pub mod hasher;
pub mod mailbox;
pub mod probe;
pub mod session;
pub mod session_store;
pub mod sqlite;
pub mod token;

pub use error::ActorError;
