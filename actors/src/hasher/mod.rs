//! The password-hashing pool: bcrypt on dedicated threads (a `SyncArbiter`), never on an HTTP
//! worker. Its queue is FIFO (one shared channel), so under a login storm every request waits
//! its turn and none starves.
pub mod messages;

use actix::prelude::*;
use std::sync::Arc;

use crate::mailbox::ActorStats;
use crate::ActorError;
pub use messages::{HashPassword, VerifyPassword};

pub struct HasherActor {
    cost: u32,
    stats: Arc<ActorStats>,
}

impl HasherActor {
    /// Starts `threads` hashing threads (0 = one per core).
    pub fn start(threads: usize, cost: u32, stats: Arc<ActorStats>) -> Addr<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        SyncArbiter::start(threads, move || HasherActor {
            cost,
            stats: Arc::clone(&stats),
        })
    }
}

impl Actor for HasherActor {
    type Context = SyncContext<Self>;
}

impl Handler<HashPassword> for HasherActor {
    type Result = Result<String, ActorError>;

    fn handle(&mut self, msg: HashPassword, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start_queued(msg.sent);
        // `$2b$`, the prefix Python's `bcrypt` writes and reads.
        let result = bcrypt::hash_with_result(msg.password.expose(), self.cost)
            .map(|h| h.format_for_version(bcrypt::Version::TwoB))
            .map_err(|e| ActorError::internal("bcrypt hash", e));
        timer.finish(&result);
        result
    }
}

impl Handler<VerifyPassword> for HasherActor {
    type Result = Result<bool, ActorError>;

    fn handle(&mut self, msg: VerifyPassword, _: &mut Self::Context) -> Self::Result {
        let timer = self.stats.start_queued(msg.sent);
        // A malformed stored hash is a failed verification, not a server error: the caller
        // answers "invalid email or password" either way.
        let result = Ok(bcrypt::verify(msg.password.expose(), &msg.hash).unwrap_or(false));
        timer.finish(&result);
        result
    }
}
