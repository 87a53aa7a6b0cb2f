//! A short-lived, in-process cache of users with their wallets, for `GET /auth/me`.
//!
//! Readers look here first and skip the database queue on a hit. Only the DbQueueActor fills
//! and invalidates it, inside its FIFO order: a read fills it with what the database said, a
//! write to that user removes the entry, so this instance never serves data older than its
//! last write. Another instance's write shows here within the TTL. Token and session checks are
//! never cached: a revocation is seen at once everywhere.
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{User, UserId, Wallet};

pub type UserWithWallet = Arc<(User, Option<Wallet>)>;

#[derive(Clone)]
pub struct UserCache(Option<moka::sync::Cache<UserId, UserWithWallet>>);

impl UserCache {
    /// `ttl` zero disables the cache.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self((!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build()
        }))
    }

    pub fn get(&self, id: &UserId) -> Option<UserWithWallet> {
        self.0.as_ref()?.get(id)
    }

    pub(crate) fn insert(&self, id: UserId, value: UserWithWallet) {
        if let Some(cache) = &self.0 {
            cache.insert(id, value);
        }
    }

    pub(crate) fn invalidate(&self, id: &UserId) {
        if let Some(cache) = &self.0 {
            cache.invalidate(id);
        }
    }
}
