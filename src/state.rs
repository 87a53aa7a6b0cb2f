//! What every handler shares: the actors' mailboxes, the settings, the dependencies' state.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::account::AccountActors;
use actors::db_queue::DbQueue;
use actors::hasher::HasherActor;
use actors::mailbox::{ActorSnapshot, ActorStats, Mailbox};
use actors::probe::Dependency;
use actors::session::SessionActor;
use ipnet::IpNet;

use crate::configuration::Settings;

pub struct AppState {
    /// Starts each HTTP worker's AccountActor and TokenActor (they share their figures).
    pub accounts: AccountActors,
    pub db: DbQueue,
    pub sessions: Mailbox<SessionActor>,
    pub hasher: Mailbox<HasherActor>,
    pub settings: Arc<Settings>,
    /// `TRUSTED_PROXIES`, parsed.
    pub trusted_proxies: Arc<[IpNet]>,
    /// `CLIENT_IPV6_PREFIX`.
    pub ipv6_prefix: u8,
    pub started_at: Instant,
    /// The MongoDB database in use (named in `MONGODB_URI`), or the embedded database's file.
    pub database_name: String,
    /// Last probe results, kept current by the actors that own the connections: the database
    /// (MongoDB or SQLite) and the token/session store (Redis or SQLite).
    pub database: Arc<Dependency>,
    pub token_store: Arc<Dependency>,
    /// The token keys: `/.well-known/jwks.json` publishes their public part.
    pub keys: Arc<actors::token::SigningKeys>,
    /// `INTROSPECTION_CLIENTS`, with their rate limits.
    pub introspection: Arc<crate::introspection::IntrospectionClients>,
}

impl AppState {
    fn all_stats(&self) -> [&Arc<ActorStats>; 5] {
        [
            &self.accounts.stats,
            self.db.stats(),
            self.accounts.tokens.stats(),
            self.sessions.stats(),
            self.hasher.stats(),
        ]
    }

    pub fn actor_snapshots(&self) -> BTreeMap<&'static str, ActorSnapshot> {
        self.all_stats()
            .into_iter()
            .map(|s| (s.name, s.snapshot()))
            .collect()
    }

    /// True when any actor restarted within `window`.
    pub fn restarted_within(&self, window: Duration) -> bool {
        self.all_stats()
            .into_iter()
            .any(|s| s.restarted_within(window))
    }
}
