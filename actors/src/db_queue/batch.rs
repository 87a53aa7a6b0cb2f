//! Group commit: how one batch of queued operations reaches the database in few round trips.
//!
//! The DbQueueActor takes what is queued (up to the batch size) as one batch, one batch at a
//! time. The result of a batch is the result of running its operations one by one in their
//! FIFO order; the batch only carries them in fewer round trips:
//!
//! - On MongoDB, look-ups (by email, by id, with the wallet) become one `$in` query per kind,
//!   login stamps one `update` command with a statement each, audit entries one ordered insert.
//!   An operation is moved ahead of another only when the two cannot see each other: look-ups
//!   do not see audit entries, and a look-up sees a login stamp only of the same user (by id or
//!   by the email the stamp carries), which it then stays behind, as a stamp stays behind a
//!   look-up of its user. Writes keep their order among themselves. The look-ups and writes of
//!   one step go out together: a batch of logins (look-ups of some users, stamps of others)
//!   costs one round trip. Every other operation (registration, update, delete, search, audit
//!   page…) runs alone, after everything before it and before everything after it.
//! - On the embedded store, the whole batch is one SQLite transaction, each operation in a
//!   savepoint of its own (a failing one is rolled back alone): one commit, one wait for the
//!   disk. Answers go out after the commit, so nothing is acknowledged before it is durable.
//!
//! Each caller gets its own outcome. A write that fails in a grouped command fails only itself;
//! those the command did not try after it are tried again one by one.
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use mongodb::bson::{oid::ObjectId, Document};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::cache::{UserCache, UserWithWallet};
use super::messages::RecordLogin;
use super::mongo::{Carried, MongoStore};
use super::sqlite::{in_savepoint, Answer, Beside, SqliteStore};
use crate::domain::{AuditEntry, Email, EmailKey, User, UserId, Wallet};
use crate::mailbox::{ActorStats, HandlingTimer};
use crate::ActorError;

/// The caller of one operation: where its outcome goes, and the timer of its handling.
pub struct Caller<T> {
    reply: oneshot::Sender<Result<T, ActorError>>,
    timer: Option<HandlingTimer>,
}

impl<T> Caller<T> {
    pub fn new() -> (Self, oneshot::Receiver<Result<T, ActorError>>) {
        let (reply, outcome) = oneshot::channel();
        (Self { reply, timer: None }, outcome)
    }

    fn start(&mut self, stats: &Arc<ActorStats>) {
        self.timer = Some(stats.start());
    }

    pub fn answer(self, result: Result<T, ActorError>) {
        if let Some(timer) = self.timer {
            timer.finish(&result);
        }
        // The caller may have stopped waiting.
        let _ = self.reply.send(result);
    }
}

/// An operation that runs alone on MongoDB (and in its savepoint on the embedded store).
pub trait Operation: Send + 'static {
    type Output: Send + 'static;

    /// The user whose cached copy this write makes stale, if any.
    fn writes_user(&self) -> Option<UserId> {
        None
    }

    /// Test-only: whether running it makes the actor fail (see `InjectPanic`).
    #[cfg(feature = "fault-injection")]
    fn panics(&self) -> bool {
        false
    }

    /// How long it may run, when that is longer than the queue's operation deadline
    /// (`MONGODB_OP_TIMEOUT_MS`): work whose length grows with the data, done before the
    /// service serves anything.
    const TIME_LIMIT: Option<Duration> = None;

    fn mongo(self, store: MongoStore) -> impl Future<Output = Result<Self::Output, ActorError>>;

    fn sqlite(self, c: &Connection) -> Result<Self::Output, ActorError>;

    /// [`Operation::sqlite`], for an operation that can share its reading with the store's
    /// reader on another core ([`Beside`]); the others read alone.
    fn sqlite_beside(self, c: &Connection, _: &Beside) -> Result<Self::Output, ActorError>
    where
        Self: Sized,
    {
        self.sqlite(c)
    }
}

/// An [`Operation`] with its caller, its types erased.
pub trait Alone: Send {
    #[cfg(feature = "fault-injection")]
    fn panics(&self) -> bool;
    fn start(&mut self, stats: &Arc<ActorStats>);
    fn time_limit(&self) -> Option<Duration>;
    fn fail(self: Box<Self>, e: ActorError);
    fn mongo(
        self: Box<Self>,
        store: MongoStore,
        cache: UserCache,
        deadline: Instant,
    ) -> LocalBoxFuture<'static, ()>;
    fn sqlite(self: Box<Self>, c: &Connection, cache: &UserCache, beside: &Beside) -> Answer;
}

pub struct Job<M: Operation> {
    pub msg: M,
    pub caller: Caller<M::Output>,
}

impl<M: Operation> Alone for Job<M> {
    #[cfg(feature = "fault-injection")]
    fn panics(&self) -> bool {
        self.msg.panics()
    }

    fn start(&mut self, stats: &Arc<ActorStats>) {
        self.caller.start(stats);
    }

    fn time_limit(&self) -> Option<Duration> {
        M::TIME_LIMIT
    }

    fn fail(self: Box<Self>, e: ActorError) {
        self.caller.answer(Err(e));
    }

    fn mongo(
        self: Box<Self>,
        store: MongoStore,
        cache: UserCache,
        deadline: Instant,
    ) -> LocalBoxFuture<'static, ()> {
        let Job { msg, caller } = *self;
        Box::pin(async move {
            let user = msg.writes_user();
            let result = within(deadline, msg.mongo(store)).await;
            if let Some(user) = user {
                cache.invalidate(&user);
            }
            caller.answer(result);
        })
    }

    fn sqlite(self: Box<Self>, c: &Connection, cache: &UserCache, beside: &Beside) -> Answer {
        let Job { msg, caller } = *self;
        let user = msg.writes_user();
        let result = in_savepoint(c, |c| msg.sqlite_beside(c, beside));
        let cache = cache.clone();
        Box::new(move |commit_failed| {
            if let Some(user) = user {
                cache.invalidate(&user);
            }
            caller.answer(match commit_failed {
                Some(e) => Err(e),
                None => result,
            })
        })
    }
}

/// One queued operation.
pub enum Op {
    ByEmail(Email, Caller<Option<User>>),
    ById(UserId, Caller<Option<User>>),
    /// Fills the user cache.
    WithWallet(UserId, Caller<Option<UserWithWallet>>),
    Stamp(RecordLogin, Caller<()>),
    Audit(AuditEntry, Caller<()>),
    Alone(Box<dyn Alone>),
}

impl Op {
    pub fn start(&mut self, stats: &Arc<ActorStats>) {
        match self {
            Op::ByEmail(_, c) | Op::ById(_, c) => c.start(stats),
            Op::WithWallet(_, c) => c.start(stats),
            Op::Stamp(_, c) | Op::Audit(_, c) => c.start(stats),
            Op::Alone(job) => job.start(stats),
        }
    }

    /// Its own time limit, if it has one ([`Operation::TIME_LIMIT`]).
    pub fn time_limit(&self) -> Option<Duration> {
        match self {
            Op::Alone(job) => job.time_limit(),
            _ => None,
        }
    }

    #[cfg(feature = "fault-injection")]
    pub fn panics(&self) -> bool {
        matches!(self, Op::Alone(job) if job.panics())
    }

    pub fn fail(self, e: ActorError) {
        match self {
            Op::ByEmail(_, c) | Op::ById(_, c) => c.answer(Err(e)),
            Op::WithWallet(_, c) => c.answer(Err(e)),
            Op::Stamp(_, c) | Op::Audit(_, c) => c.answer(Err(e)),
            Op::Alone(job) => job.fail(e),
        }
    }
}

/// Runs `fut` within the batch's budget.
async fn within<T>(
    deadline: Instant,
    fut: impl Future<Output = Result<T, ActorError>>,
) -> Result<T, ActorError> {
    tokio::time::timeout_at(deadline.into(), fut)
        .await
        .unwrap_or(Err(ActorError::Timeout("database")))
}

/// The same failure for another caller of a grouped command.
fn echo(e: &ActorError) -> ActorError {
    match e {
        ActorError::Timeout(what) => ActorError::Timeout(what),
        ActorError::Overloaded(what) => ActorError::Overloaded(what),
        ActorError::Unavailable { dependency, source } => {
            ActorError::unavailable(dependency, source.to_string())
        }
        ActorError::Internal { context, source } => {
            ActorError::internal(context, source.to_string())
        }
        other => ActorError::internal("mongodb", other.to_string()),
    }
}

fn read_user(doc: &Document) -> Result<User, ActorError> {
    User::from_document(doc).map_err(|e| ActorError::internal("reading a stored document", e))
}

/// Runs a batch on MongoDB: maximal runs of look-ups, stamps and audit entries as
/// [`Group`]s, every other operation alone between them.
pub async fn run_mongo(store: MongoStore, cache: UserCache, ops: Vec<Op>, deadline: Instant) {
    let mut group = Group::default();
    for op in ops {
        match op {
            Op::Alone(job) => {
                std::mem::take(&mut group)
                    .run(&store, &cache, deadline)
                    .await;
                job.mongo(store.clone(), cache.clone(), deadline).await;
            }
            op => group.push(op),
        }
    }
    group.run(&store, &cache, deadline).await;
}

/// Runs a batch on the embedded store: one transaction, each operation in its savepoint.
pub async fn run_sqlite(store: SqliteStore, cache: UserCache, ops: Vec<Op>, deadline: Instant) {
    // Should the database thread be gone, every caller hears why (their answers are dropped
    // with the batch, which their callers see as the actor failing).
    let reader = store.reader();
    let _ = store
        .batch(deadline, move |c| {
            let beside = Beside::new(reader, c, deadline);
            ops.into_iter()
                .map(|op| sqlite_op(c, &cache, &beside, op))
                .collect()
        })
        .await;
}

fn sqlite_op(c: &Connection, cache: &UserCache, beside: &Beside, op: Op) -> Answer {
    /// The answer of an operation: its own result, or the commit's failure.
    fn answer<T: Send + 'static>(caller: Caller<T>, result: Result<T, ActorError>) -> Answer {
        Box::new(move |commit_failed| {
            caller.answer(match commit_failed {
                Some(e) => Err(e),
                None => result,
            })
        })
    }
    match op {
        Op::ByEmail(email, caller) => answer(caller, SqliteStore::find_user_by_email(c, email)),
        Op::ById(id, caller) => answer(caller, SqliteStore::find_user_by_id(c, id)),
        Op::WithWallet(id, caller) => {
            let found = SqliteStore::find_user_with_wallet(c, id).map(|found| {
                found.map(|found| {
                    let found = Arc::new(found);
                    cache.insert(id, Arc::clone(&found));
                    found
                })
            });
            answer(caller, found)
        }
        Op::Stamp(m, caller) => {
            let stamped = in_savepoint(c, |c| {
                SqliteStore::record_login(c, m.user_id, m.at, m.audit)
            });
            let (cache, id) = (cache.clone(), m.user_id);
            Box::new(move |commit_failed| {
                cache.invalidate(&id);
                caller.answer(match commit_failed {
                    Some(e) => Err(e),
                    None => stamped,
                })
            })
        }
        Op::Audit(entry, caller) => answer(
            caller,
            in_savepoint(c, |c| SqliteStore::write_audit(c, entry)),
        ),
        Op::Alone(job) => job.sqlite(c, cache, beside),
    }
}

/// A look-up in a [`Group`].
enum Read {
    ByEmail(Email, Caller<Option<User>>),
    ById(UserId, Caller<Option<User>>),
    WithWallet(UserId, Caller<Option<UserWithWallet>>),
}

/// A write in a [`Group`].
enum Write {
    Stamp(RecordLogin, Caller<()>),
    Audit(AuditEntry, Caller<()>),
}

/// One step of a group: its look-ups (one query per kind) and its writes (one `update` for the
/// stamps, one insert for the audit entries), all sent together: one round trip per step.
/// Nothing in a step sees anything else in it (see [`Group`]).
#[derive(Default)]
struct Level {
    reads: Vec<Read>,
    writes: Vec<Write>,
}

/// A run of look-ups, login stamps and audit entries, placed in as few [`Level`]s as their
/// order allows: a look-up goes one level after the last stamp of its user, a stamp no earlier
/// than the last write (writes keep their order) and one level after the last look-up of its
/// user, an audit entry with the last write. So within a level no look-up and stamp share a
/// user, and the level's commands can go out at once.
#[derive(Default)]
struct Group {
    levels: Vec<Level>,
    /// The level of the last write.
    last_write: usize,
    /// The level of the last stamp of a user, by id and by email key.
    stamped_id: HashMap<UserId, usize>,
    stamped_email: HashMap<EmailKey, usize>,
    /// The level of the last look-up of a user, by id and by email key.
    read_id: HashMap<UserId, usize>,
    read_email: HashMap<EmailKey, usize>,
}

impl Group {
    fn level(&mut self, at: usize) -> &mut Level {
        while self.levels.len() <= at {
            self.levels.push(Level::default());
        }
        &mut self.levels[at]
    }

    fn push(&mut self, op: Op) {
        match op {
            Op::ByEmail(email, caller) => {
                let key = email.key().clone();
                let at = self.stamped_email.get(&key).map_or(0, |l| l + 1);
                let seen = self.read_email.entry(key).or_default();
                *seen = (*seen).max(at);
                self.level(at).reads.push(Read::ByEmail(email, caller));
            }
            Op::ById(id, caller) => {
                let at = self.read_after_stamps(id);
                self.level(at).reads.push(Read::ById(id, caller));
            }
            Op::WithWallet(id, caller) => {
                let at = self.read_after_stamps(id);
                self.level(at).reads.push(Read::WithWallet(id, caller));
            }
            Op::Stamp(m, caller) => {
                let email = EmailKey::of(&m.email);
                let after_read = |level: Option<&usize>| level.map(|l| l + 1);
                let at = [
                    Some(self.last_write),
                    after_read(self.read_id.get(&m.user_id)),
                    after_read(self.read_email.get(&email)),
                ]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0);
                self.last_write = at;
                self.stamped_id.insert(m.user_id, at);
                self.stamped_email.insert(email, at);
                self.level(at).writes.push(Write::Stamp(m, caller));
            }
            Op::Audit(entry, caller) => {
                let at = self.last_write;
                self.level(at).writes.push(Write::Audit(entry, caller));
            }
            // Runs alone: never pushed into a group.
            Op::Alone(job) => job.fail(ActorError::internal(
                "db_queue",
                "an operation that runs alone was grouped",
            )),
        }
    }

    fn read_after_stamps(&mut self, id: UserId) -> usize {
        let at = self.stamped_id.get(&id).map_or(0, |l| l + 1);
        let seen = self.read_id.entry(id).or_default();
        *seen = (*seen).max(at);
        at
    }

    async fn run(self, store: &MongoStore, cache: &UserCache, deadline: Instant) {
        for level in self.levels {
            futures::join!(
                run_reads(store, cache, level.reads, deadline),
                run_writes(store, cache, level.writes, deadline),
            );
        }
    }
}

/// The look-ups of one level: users by id, users by email and wallets, three queries at once.
async fn run_reads(store: &MongoStore, cache: &UserCache, reads: Vec<Read>, deadline: Instant) {
    if reads.is_empty() {
        return;
    }
    let mut ids: Vec<ObjectId> = Vec::new();
    let mut emails: Vec<Email> = Vec::new();
    let mut wallet_owners: Vec<String> = Vec::new();
    for read in &reads {
        match read {
            Read::ByEmail(email, _) => emails.push(email.clone()),
            Read::ById(id, _) => ids.push(id.oid()),
            Read::WithWallet(id, _) => {
                ids.push(id.oid());
                wallet_owners.push(id.to_hex());
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    emails.sort_unstable_by(|a, b| a.key().cmp(b.key()));
    emails.dedup_by(|a, b| a.key() == b.key());
    wallet_owners.sort_unstable();
    wallet_owners.dedup();
    let (by_id, by_email, wallets) = futures::join!(
        within(deadline, store.users_with_ids(ids, deadline)),
        within(deadline, store.users_with_emails(emails, deadline)),
        within(deadline, store.wallets_of(wallet_owners, deadline)),
    );
    let by_id: Result<HashMap<UserId, User>, ActorError> = by_id.and_then(|docs| {
        docs.iter()
            .map(|d| read_user(d).map(|u| (u.id, u)))
            .collect()
    });
    // Paired by the key of the stored email: a pure function of it, so a user found by its
    // stored key or (not yet keyed) by its spelling pairs with every request of its account.
    let by_email: Result<Vec<(EmailKey, User)>, ActorError> = by_email.and_then(|docs| {
        docs.iter()
            .map(|d| read_user(d).map(|u| (EmailKey::of(&u.email), u)))
            .collect()
    });
    let wallets: Result<HashMap<String, Wallet>, ActorError> = wallets.and_then(|docs| {
        docs.iter()
            .map(|d| {
                Wallet::from_document(d)
                    .map(|w| (w.user_id.clone(), w))
                    .map_err(|e| ActorError::internal("reading a stored document", e))
            })
            .collect()
    });
    for read in reads {
        match read {
            Read::ById(id, caller) => caller.answer(match &by_id {
                Ok(users) => Ok(users.get(&id).cloned()),
                Err(e) => Err(echo(e)),
            }),
            Read::WithWallet(id, caller) => {
                let found = match (&by_id, &wallets) {
                    (Ok(users), Ok(wallets)) => Ok(users.get(&id).map(|user| {
                        let found = Arc::new((user.clone(), wallets.get(&id.to_hex()).cloned()));
                        cache.insert(id, Arc::clone(&found));
                        found
                    })),
                    (Err(e), _) | (_, Err(e)) => Err(echo(e)),
                };
                caller.answer(found);
            }
            Read::ByEmail(email, caller) => caller.answer(match &by_email {
                Ok(users) => Ok(users
                    .iter()
                    .find(|(key, _)| key == email.key())
                    .map(|(_, user)| user.clone())),
                Err(e) => Err(echo(e)),
            }),
        }
    }
}

/// What became of one part (the stamp, or the audit entries) of a grouped write.
enum Part {
    Done,
    Failed(ActorError),
    /// The command stopped before it: to be tried again alone.
    NotTried,
}

/// Where the `n`-th write of a command landed, given the command's outcome.
fn part(carried: &Carried, n: usize) -> Part {
    match carried {
        Carried::All => Part::Done,
        Carried::StoppedAt(at, _) if n < *at => Part::Done,
        Carried::StoppedAt(at, e) if n == *at => Part::Failed(echo(e)),
        Carried::StoppedAt(..) => Part::NotTried,
        Carried::Failed(e) => Part::Failed(echo(e)),
    }
}

/// The parts of a range of writes: failed if any failed, else to be tried if any was not,
/// else done.
fn parts(carried: &Carried, range: std::ops::Range<usize>) -> Part {
    let mut outcome = Part::Done;
    for n in range {
        match part(carried, n) {
            Part::Done => {}
            Part::Failed(e) => return Part::Failed(e),
            Part::NotTried => outcome = Part::NotTried,
        }
    }
    outcome
}

/// The writes of one level: every stamp in one `update`, every audit entry in one insert,
/// both at once; what a command did not try is tried alone, in order.
async fn run_writes(store: &MongoStore, cache: &UserCache, writes: Vec<Write>, deadline: Instant) {
    if writes.is_empty() {
        return;
    }
    let mut stamps = Vec::new();
    let mut docs = Vec::new();
    // Per write: its stamp's index, and the range of its audit entries.
    let mut places = Vec::with_capacity(writes.len());
    for write in &writes {
        let stamp = match write {
            Write::Stamp(m, _) => {
                stamps.push((m.user_id, m.at));
                Some(stamps.len() - 1)
            }
            Write::Audit(..) => None,
        };
        let from = docs.len();
        match write {
            Write::Stamp(m, _) => docs.extend(m.audit.iter().map(AuditEntry::to_document)),
            Write::Audit(entry, _) => docs.push(entry.to_document()),
        }
        places.push((stamp, from..docs.len()));
    }
    let timed_out = |r: Result<Carried, ActorError>| r.unwrap_or_else(Carried::Failed);
    let (stamped, inserted) = futures::join!(
        within(deadline, async { Ok(store.stamp_logins(&stamps).await) }),
        within(deadline, async { Ok(store.insert_audit(docs).await) }),
    );
    let (stamped, inserted) = (timed_out(stamped), timed_out(inserted));
    for (write, (stamp, entries)) in writes.into_iter().zip(places) {
        let stamp = stamp.map_or(Part::Done, |n| part(&stamped, n));
        let entries = parts(&inserted, entries);
        match write {
            Write::Stamp(m, caller) => {
                let id = m.user_id;
                let outcome = match (stamp, entries) {
                    (Part::Failed(e), _) | (_, Part::Failed(e)) => Err(e),
                    (Part::Done, Part::Done) => Ok(()),
                    (stamp, entries) => {
                        within(deadline, retry_stamp(store, m, stamp, entries)).await
                    }
                };
                cache.invalidate(&id);
                caller.answer(outcome);
            }
            Write::Audit(entry, caller) => caller.answer(match entries {
                Part::Done => Ok(()),
                Part::Failed(e) => Err(e),
                Part::NotTried => within(deadline, store.clone().write_audit(entry)).await,
            }),
        }
    }
}

/// The parts of a login stamp its grouped commands did not try, tried alone.
async fn retry_stamp(
    store: &MongoStore,
    m: RecordLogin,
    stamp: Part,
    entries: Part,
) -> Result<(), ActorError> {
    let carried = |c: Carried| match c {
        Carried::All => Ok(()),
        Carried::StoppedAt(_, e) | Carried::Failed(e) => Err(e),
    };
    if matches!(stamp, Part::NotTried) {
        carried(store.stamp_logins(&[(m.user_id, m.at)]).await)?;
    }
    if matches!(entries, Part::NotTried) {
        let docs = m.audit.iter().map(AuditEntry::to_document).collect();
        carried(store.insert_audit(docs).await)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuditEntry;

    fn by_email(email: &str) -> Op {
        let email = Email::parse(email).expect("an email");
        Op::ByEmail(email, Caller::new().0)
    }

    fn by_id(id: UserId) -> Op {
        Op::ById(id, Caller::new().0)
    }

    fn stamp(id: UserId, email: &str) -> Op {
        let login = RecordLogin {
            user_id: id,
            email: email.to_string(),
            at: chrono::Utc::now(),
            audit: Vec::new(),
        };
        Op::Stamp(login, Caller::new().0)
    }

    fn audit() -> Op {
        Op::Audit(AuditEntry::new("auth.login", "success"), Caller::new().0)
    }

    /// Look-ups and writes per level, in order.
    fn shape(ops: Vec<Op>) -> Vec<(usize, usize)> {
        let mut group = Group::default();
        ops.into_iter().for_each(|op| group.push(op));
        group
            .levels
            .iter()
            .map(|l| (l.reads.len(), l.writes.len()))
            .collect()
    }

    #[test]
    fn logins_of_different_users_share_one_step() {
        let (a, b) = (UserId::new(), UserId::new());
        let ops = vec![
            by_email("c@example.com"),
            stamp(a, "a@example.com"),
            audit(),
            by_id(b),
            stamp(b, "B@example.com"),
            by_email("d@example.com"),
        ];
        // The stamp of b follows a look-up of b: the next step.
        assert_eq!(shape(ops), vec![(3, 2), (0, 1)]);
    }

    #[test]
    fn a_stamp_stays_a_step_behind_a_look_up_of_its_user_by_email() {
        let a = UserId::new();
        let ops = vec![
            by_email("A@example.com"),
            stamp(a, "a@Example.com"),
            audit(),
        ];
        assert_eq!(shape(ops), vec![(1, 0), (0, 2)]);
    }

    #[test]
    fn a_look_up_stays_a_step_behind_a_stamp_of_its_user() {
        let a = UserId::new();
        let ops = vec![
            stamp(a, "a@example.com"),
            by_id(a),
            by_email("a@example.com"),
            by_id(UserId::new()),
        ];
        assert_eq!(shape(ops), vec![(1, 1), (2, 0)]);
    }

    #[test]
    fn writes_keep_their_order_across_steps() {
        let (a, b) = (UserId::new(), UserId::new());
        let ops = vec![
            by_id(a),
            stamp(a, "a@example.com"),
            // Nothing reads b, but a write never goes ahead of an earlier one.
            stamp(b, "b@example.com"),
            audit(),
        ];
        assert_eq!(shape(ops), vec![(1, 0), (0, 3)]);
    }
}
