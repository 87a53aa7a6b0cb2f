//! The MongoDB store behind the DbQueueActor. Only this file speaks the driver's language.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mongodb::bson::{self, bson, doc, oid::ObjectId, Bson, Document};
use mongodb::error::{
    ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::event::{command::CommandEvent, EventHandler};
use mongodb::options::{
    ClientOptions, Credential, ReadPreference, SelectionCriteria, ServerMonitoringMode,
};
use mongodb::{Client, Collection, Database};

use futures::TryStreamExt;
use mongodb::options::FindOptions;

use super::messages::{
    BackfillSearchIndex, Backfilled, DeleteUser, Expect, Guard, IndexPlan, Indexed,
    KeepSearchMemory, ListAudit, MongoBackfill, RegisterUser, SearchIndexed, SearchPosition,
    SearchSlice, SearchUsersSlice, SlotRange, UpdateUser, UserFilter, UserRange, Written,
};
use super::mongo_indexes::{case_insensitive, get_count, EMAIL_KEY};
use super::mongo_memory::{self, SearchMemory};
use crate::domain::{
    probe_key, search_keys, search_slot, AuditEntry, AuditRecord, Email, Page, Registered, Role,
    User, UserId, UserStatus, Username, Wallet,
};
use crate::error::DuplicateField;
use crate::ActorError;

const DUPLICATE_KEY: i32 = 11000;

/// A stored user whose email key is missing or not its email's: its id, email and right key.
fn stale_key(user: &Document) -> Option<(ObjectId, String, crate::domain::EmailKey)> {
    let id = user.get_object_id("_id").ok()?;
    let email = user.get_str("email").ok()?;
    let key = crate::domain::EmailKey::of(email);
    (user.get_str(EMAIL_KEY) != Ok(key.as_str())).then(|| (id, email.to_string(), key))
}

const DEFAULT_DATABASE: &str = "credit_system";
const TRANSACTION_ATTEMPTS: usize = 5;
/// The `_id` of the administrators' lock document in the `locks` collection.
const ADMINS_LOCK: &str = "admins";

/// Connects lazily (the driver dials on first use), so the service starts while MongoDB is down
/// and reports it in `/health/ready` instead of refusing to start.
pub async fn connect(
    uri: &str,
    user: Option<&str>,
    password: Option<&str>,
    server_selection_timeout: Duration,
) -> Result<MongoStore, String> {
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| format!("MONGODB_URI is not a valid MongoDB connection string: {e}"))?;
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        options.credential = Some(
            Credential::builder()
                .username(user.to_string())
                .password(password.map(str::to_string))
                .build(),
        );
    }
    options.server_selection_timeout = Some(server_selection_timeout);
    options.connect_timeout = Some(server_selection_timeout);
    options.app_name = Some("cs-user-management".into());
    // Poll the deployment's state rather than stream it, unless the URI says otherwise: after a
    // step-down or a "shutting down" answer the driver marks the server unknown and asks for a
    // check at once, which a poll makes within its 500 ms floor; a streamed check waited for
    // the server's next push (up to the 10 s heartbeat), and every write failed meanwhile.
    if options.server_monitoring_mode.is_none() {
        options.server_monitoring_mode = Some(ServerMonitoringMode::Poll);
    }
    // Every command the client sends is one round trip; the probe's hellos are not the queue's.
    let trips = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&trips);
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            if started.command_name != "hello" {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));
    let db_name = options
        .default_database
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
    let client = Client::with_options(options).map_err(|e| format!("MongoDB client: {e}"))?;
    Ok(MongoStore {
        db: client.database(&db_name),
        audit_retention: None,
        trips,
        seed_beside: Arc::default(),
        search_ready: Arc::default(),
        memory: Arc::new(SearchMemory::new(0)),
    })
}

/// Commits or aborts a transaction after its writes. A commit whose result is unknown (the
/// connection closed, the write concern not confirmed) is tried again, as MongoDB's documented
/// retry loop says: committing is idempotent. It gives up after `TRANSACTION_ATTEMPTS`, and the
/// error keeps its label, so the whole transaction is not run again over a commit that may
/// have applied.
async fn finish_transaction(
    mut session: mongodb::ClientSession,
    writes: Result<(), mongodb::error::Error>,
) -> Result<(), mongodb::error::Error> {
    if let Err(e) = writes {
        // Best effort: the server aborts an abandoned transaction by itself anyway.
        let _ = session.abort_transaction().await;
        return Err(e);
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match session.commit_transaction().await {
            Err(e)
                if tries < TRANSACTION_ATTEMPTS
                    && e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) =>
            {
                tokio::time::sleep(backoff(tries, &e)).await;
            }
            other => return other,
        }
    }
}

/// Whether a failed transaction may be run again from its start: the server or the driver said
/// so (`TransientTransactionError`), or the node could not serve it (stepping down, shutting
/// down, the connection lost) before its commit was sent. Never after a commit whose result is
/// unknown: that one is tried again by itself.
fn may_run_again(e: &mongodb::error::Error) -> bool {
    if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) {
        return false;
    }
    e.contains_label(TRANSIENT_TRANSACTION_ERROR) || crate::error::mongo_is_transient(e)
}

/// A pause before another try, growing and jittered: short after a conflict (transactions
/// that met on the administrators' lock should not meet again at once), longer when the node
/// itself could not serve (the driver needs a moment to see the deployment again).
fn backoff(tries: usize, e: &mongodb::error::Error) -> Duration {
    let unit = if e.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        5
    } else {
        50
    };
    Duration::from_millis(rand::random_range(1..=unit * tries as u64))
}

/// Runs `attempt` until it succeeds, fails with an error it [`may_run_again`] not, or has been
/// tried `TRANSACTION_ATTEMPTS` times.
async fn with_retries<F, Fut, T>(mut attempt: F) -> Result<T, mongodb::error::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, mongodb::error::Error>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if tries < TRANSACTION_ATTEMPTS && may_run_again(&e) => {
                tokio::time::sleep(backoff(tries, &e)).await;
            }
            other => return other,
        }
    }
}

/// One page of `filter`'s matches in `sort` order, and how many match in all.
async fn page(
    collection: &Collection<Document>,
    filter: Document,
    sort: Document,
    skip: u64,
    limit: i64,
) -> Result<Page<Document>, ActorError> {
    let total = collection
        .count_documents(filter.clone())
        .await
        .map_err(ActorError::mongo)?;
    let options = FindOptions::builder()
        .sort(sort)
        .skip(skip)
        .limit(limit)
        .build();
    let docs = find_all(collection, filter, options).await?;
    Ok(Page { items: docs, total })
}

/// Every document of `collection` that `filter` matches, read with `options`.
async fn find_all(
    collection: &Collection<Document>,
    filter: Document,
    options: FindOptions,
) -> Result<Vec<Document>, ActorError> {
    collection
        .find(filter)
        .with_options(options)
        .await
        .map_err(ActorError::mongo)?
        .try_collect()
        .await
        .map_err(ActorError::mongo)
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == DUPLICATE_KEY)),
        _ => false,
    }
}

/// The stored values that read as `status` (a missing status reads as active; one this version
/// does not know reads as inactive).
fn status_is(status: UserStatus) -> Bson {
    match status {
        UserStatus::Active => bson!({"$in": ["active", Bson::Null]}),
        UserStatus::Suspended => bson!("suspended"),
        UserStatus::Inactive => bson!({"$nin": ["active", "suspended", Bson::Null]}),
    }
}

/// The stored values that read as `role` (anything but `admin` reads as a user).
fn role_is(role: Role) -> Bson {
    match role {
        Role::Admin => bson!("admin"),
        Role::User => bson!({"$ne": "admin"}),
    }
}

fn active_admins() -> Document {
    doc! {"role": role_is(Role::Admin), "status": status_is(UserStatus::Active)}
}

/// The target filter of a conditional write: its id, the guard's and the expectations.
fn guarded_filter(id: UserId, guard: Guard, expect: &Expect) -> Document {
    let mut filter = doc! {"_id": id.oid()};
    if guard == Guard::Owner {
        filter.insert("status", status_is(UserStatus::Active));
    }
    if let Some(status) = expect.status {
        // An owner's write already requires `active`; a stricter expectation cannot differ.
        filter.insert("status", status_is(status));
    }
    if let Some(role) = expect.role {
        filter.insert("role", role_is(role));
    }
    if let Some(version) = expect.credential_version {
        let version = if version == 0 {
            bson!({"$in": [0_i64, Bson::Null]})
        } else {
            bson!(version)
        };
        filter.insert("credential_version", version);
    }
    filter
}

/// What a transaction decided: commit its writes, or abort them and answer `Written::NotFound`
/// or `Written::Changed` (or an error such as [`ActorError::LastAdmin`]).
enum Decision<T> {
    Commit(T),
    Abort(Result<Written<T>, ActorError>),
}

/// How long an indexed search may read the users written without keys: one turn of the queue
/// is held for it. Past it, as with too many of them, searches go on in slices of every user
/// until the backfill has keyed them. Generous, so a loaded server is not taken for an import.
const SEARCH_BUDGET: Duration = Duration::from_secs(1);

/// How long a backfill step's writes may take: what a request queued behind it waits.
const BACKFILL_STEP: Duration = Duration::from_millis(20);

/// The server stopped the command at its time limit (`maxTimeMS`).
fn over_time(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 50 || c.code == 262)
}

/// The index condition a search is begun from: the field and value of the first substring's
/// key ([`probe_key`]) or, with no substring, of the status asked for. `None` when a substring
/// is shorter than any key, or nothing is asked.
fn index_key(f: &UserFilter) -> Option<(&'static str, String)> {
    let needle = [("username_keys", &f.username), ("email_keys", &f.email)]
        .into_iter()
        .find_map(|(field, needle)| Some((field, needle.as_ref()?)));
    match (needle, f.status) {
        (Some((field, needle)), _) => Some((field, probe_key(needle)?)),
        (None, Some(status)) => Some(("status", status.as_str().to_string())),
        (None, None) => None,
    }
}

fn limit_usize(limit: i64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// The sort keys of the users of `docs` that `filter` matches.
fn matching(filter: &UserFilter, docs: &[Document]) -> Vec<(DateTime<Utc>, UserId)> {
    docs.iter()
        .filter(|d| filter.matches(d))
        .filter_map(User::sort_key)
        .collect()
}

#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    /// How long audit entries are kept (`None`: for ever): the expiry of the `at` index.
    audit_retention: Option<Duration>,
    /// Commands sent so far (round trips), the probe's pings left out.
    trips: Arc<AtomicU64>,
    /// The seed's module may be writing users without an email key beside us (its `email_1`
    /// index was found at start-up): look-ups by email then also find them by spelling.
    seed_beside: Arc<std::sync::atomic::AtomicBool>,
    /// Every user has its search keys (the backfill found none without): searches by a
    /// substring of three characters or more are answered from the key indexes.
    search_ready: Arc<std::sync::atomic::AtomicBool>,
    /// What searches compare of every user, kept in the service ([`SearchMemory`]).
    memory: Arc<SearchMemory>,
}

/// The outcome of one command carrying many writes, in order (`ordered: true`).
pub enum Carried {
    /// Every write applied.
    All,
    /// The writes before `index` applied, that one failed, those after were not tried.
    StoppedAt(usize, ActorError),
    /// The command failed as a whole: whether any write applied is unknown.
    Failed(ActorError),
}

/// What is left of the budget, as a server-side time limit (at least 1 ms).
fn budget(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

impl MongoStore {
    /// Audit entries older than `retention` expire (a TTL index; the DbQueueActor's periodic
    /// purge removes them too, on a server that does not expire documents by itself).
    pub fn with_audit_retention(mut self, retention: Option<Duration>) -> Self {
        self.audit_retention = retention;
        self
    }

    /// Keeps what searches compare of at most `users` users in memory (0: never), once
    /// [`KeepSearchMemory`] steps have filled it.
    pub fn with_search_memory(mut self, users: usize) -> Self {
        self.memory = Arc::new(SearchMemory::new(users));
        self
    }

    /// The search memory, for `/health`.
    pub fn search_memory(&self) -> Arc<SearchMemory> {
        Arc::clone(&self.memory)
    }

    /// One step of keeping the search memory ([`KeepSearchMemory`]).
    pub async fn keep_search_memory(self, q: KeepSearchMemory) -> Result<bool, ActorError> {
        self.memory
            .keep(&self.db, q.chunk)
            .await
            .map_err(ActorError::mongo)
    }

    /// Removes the audit entries older than `before`; replies with how many went.
    pub async fn purge_audit(self, before: DateTime<Utc>) -> Result<u64, ActorError> {
        self.audit()
            .delete_many(doc! {"at": {"$lt": bson::DateTime::from_chrono(before)}})
            .await
            .map(|r| r.deleted_count)
            .map_err(ActorError::mongo)
    }

    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    /// Commands sent so far: the difference across a batch is its round trips.
    pub fn round_trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Users with any of `ids`, in one query under the time budget.
    pub async fn users_with_ids(
        &self,
        ids: Vec<ObjectId>,
        deadline: Instant,
    ) -> Result<Vec<Document>, ActorError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.collect(self.users(), doc! {"_id": {"$in": ids}}, deadline)
            .await
    }

    /// Users whose email has the key of any of `emails` (SPEC 10), in one query under the time
    /// budget; then, for the keys nobody has, the users the seed's module wrote since the last
    /// start (no key yet) under these spellings, who are keyed as they are met.
    pub async fn users_with_emails(
        &self,
        emails: Vec<Email>,
        deadline: Instant,
    ) -> Result<Vec<Document>, ActorError> {
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = emails.iter().map(|e| e.key().as_str()).collect();
        let mut found = self
            .collect(self.users(), doc! {EMAIL_KEY: {"$in": &keys}}, deadline)
            .await?;
        let missed: Vec<&Email> = emails
            .iter()
            .filter(|e| {
                !found
                    .iter()
                    .any(|d| d.get_str(EMAIL_KEY) == Ok(e.key().as_str()))
            })
            .collect();
        if !missed.is_empty() && self.seed_beside.load(Ordering::Relaxed) {
            found.extend(self.meet_unkeyed(&missed, deadline).await?);
        }
        Ok(found)
    }

    /// Users the seed's module wrote (or re-spelled) since the last start whose email has the
    /// key of one of `emails` but whose stored key is missing or stale: found by spelling
    /// through the case-insensitive `email_ci` index, the key deciding, and keyed now. One whose
    /// key another account holds already is left as it is, and logged.
    async fn meet_unkeyed(
        &self,
        emails: &[&Email],
        deadline: Instant,
    ) -> Result<Vec<Document>, ActorError> {
        let spelled: Vec<&str> = emails.iter().map(|e| e.as_str()).collect();
        let options = FindOptions::builder()
            .max_time(budget(deadline))
            .collation(case_insensitive())
            .build();
        let candidates = find_all(&self.users(), doc! {"email": {"$in": spelled}}, options).await?;
        let mut met = Vec::new();
        for user in candidates {
            let Some((id, email, key)) = stale_key(&user) else {
                continue;
            };
            if !emails.iter().any(|e| e.key() == &key) {
                continue;
            }
            let keyed = self
                .users()
                .update_one(
                    doc! {"_id": id, "email": email},
                    doc! {"$set": {EMAIL_KEY: key.as_str()}},
                )
                .await;
            match keyed {
                Ok(_) => tracing::info!(user_id = %id, "a user the seed's module wrote was keyed"),
                Err(e) if is_duplicate(&e) => tracing::warn!(
                    user_id = %id,
                    "a user the seed's module wrote has the email key of another account; \
                     the next start-up stops until one of them changes its email"
                ),
                Err(e) => return Err(ActorError::mongo(e)),
            }
            met.push(user);
        }
        Ok(met)
    }

    /// The wallets of any of `user_ids` (hex), in one query under the time budget.
    pub async fn wallets_of(
        &self,
        user_ids: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<Document>, ActorError> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = doc! {"user_id": {"$in": user_ids}};
        self.collect(self.wallets(), filter, deadline).await
    }

    async fn collect(
        &self,
        collection: Collection<Document>,
        filter: Document,
        deadline: Instant,
    ) -> Result<Vec<Document>, ActorError> {
        // A user's search keys are for the index only: not read back.
        let projection =
            (collection.name() == "users").then(|| doc! {"username_keys": 0, "email_keys": 0});
        let options = FindOptions::builder()
            .max_time(budget(deadline))
            .projection(projection)
            .build();
        find_all(&collection, filter, options).await
    }

    /// Login stamps (`last_login_at`, `login_count + 1`) of several users as one `update`
    /// command, applied in order.
    pub async fn stamp_logins(&self, stamps: &[(UserId, DateTime<Utc>)]) -> Carried {
        if stamps.is_empty() {
            return Carried::All;
        }
        let updates: Vec<Document> = stamps
            .iter()
            .map(|(id, at)| {
                doc! {
                    "q": {"_id": id.oid()},
                    "u": {"$set": {"last_login_at": bson::DateTime::from_chrono(*at)},
                          "$inc": {"login_count": 1_i64}},
                }
            })
            .collect();
        let command = doc! {"update": "users", "updates": updates, "ordered": true};
        let reply = match self.db.run_command(command).await {
            Ok(reply) => reply,
            Err(e) => return Carried::Failed(ActorError::mongo(e)),
        };
        if let Ok(concern) = reply.get_document("writeConcernError") {
            // Applied but not confirmed as durable: the caller is told to try again.
            let e = ActorError::unavailable("mongodb", format!("write concern: {concern}"));
            return Carried::Failed(e);
        }
        let first = reply
            .get_array("writeErrors")
            .ok()
            .and_then(|errors| errors.first())
            .and_then(Bson::as_document);
        match first {
            None => Carried::All,
            Some(error) => {
                let index = error
                    .get_i32("index")
                    .ok()
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(0);
                let e = ActorError::internal("mongodb", format!("login stamp: {error}"));
                Carried::StoppedAt(index, e)
            }
        }
    }

    /// Audit entries as one ordered insert.
    pub async fn insert_audit(&self, docs: Vec<Document>) -> Carried {
        if docs.is_empty() {
            return Carried::All;
        }
        match self.audit().insert_many(docs).ordered(true).await {
            Ok(_) => Carried::All,
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(m) => match m.write_errors.as_ref().and_then(|w| w.first()) {
                    Some(w) => {
                        let index = w.index;
                        Carried::StoppedAt(index, ActorError::mongo(e))
                    }
                    None => Carried::Failed(ActorError::mongo(e)),
                },
                _ => Carried::Failed(ActorError::mongo(e)),
            },
        }
    }

    fn users(&self) -> Collection<Document> {
        self.db.collection("users")
    }

    fn wallets(&self) -> Collection<Document> {
        self.db.collection("wallets")
    }

    /// Inside a transaction: writes its audit entry, and commits.
    async fn commit_with(
        &self,
        session: &mut mongodb::ClientSession,
        audit: Document,
    ) -> mongodb::error::Result<Decision<()>> {
        self.audit().insert_one(audit).session(session).await?;
        Ok(Decision::Commit(()))
    }

    fn audit(&self) -> Collection<Document> {
        self.db.collection("audit_log")
    }

    fn locks(&self) -> Collection<Document> {
        self.db.collection("locks")
    }

    /// Whether the deployment takes writes now: a `hello` to any member it can reach, and its
    /// word that it is the writable primary. A step-down or an election reads as down, with why.
    pub async fn ping(self) -> Result<(), ActorError> {
        let hello = self
            .db
            .run_command(doc! {"hello": 1})
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::nearest(
                None,
            )))
            .await
            .map_err(ActorError::mongo)?;
        if hello.get_bool("isWritablePrimary").unwrap_or(true) {
            Ok(())
        } else {
            Err(ActorError::unavailable(
                "mongodb",
                crate::error::PublicReason(
                    "no writable primary: the server stepped down or an election is running, \
                     so writes are refused until a primary is back",
                ),
            ))
        }
    }

    pub async fn plan_indexes(self) -> Result<IndexPlan, ActorError> {
        super::mongo_indexes::plan(&self.db, self.audit_retention).await
    }

    /// What starting on this database would change, read without writing anything: the
    /// index steps of [`Self::plan_indexes`] and the audit entries older than the retention
    /// that its expiry index would remove.
    pub async fn plan_read_only(self) -> Result<IndexPlan, ActorError> {
        let mut plan = self.clone().plan_indexes().await?;
        let unkeyed = self
            .users()
            .count_documents(doc! {"$or": [
                {"username_keys": Bson::Null},
                {"email_keys": Bson::Null},
                {"search_slot": Bson::Null},
            ]})
            .await
            .map_err(ActorError::mongo)?;
        if unkeyed > 0 {
            plan.steps.push(format!(
                "add search keys to {unkeyed} users (username_keys, email_keys, search_slot), in \
                 steps, while serving"
            ));
        }
        if let Some(retention) = self.audit_retention {
            let before = Utc::now() - retention;
            let aged = self
                .audit()
                .count_documents(doc! {"at": {"$lt": bson::DateTime::from_chrono(before)}})
                .await
                .map_err(ActorError::mongo)?;
            if aged > 0 {
                plan.steps.push(format!(
                    "remove {aged} audit entries older than {} days (AUDIT_RETENTION_DAYS; \
                     MongoDB's expiry index removes them)",
                    retention.as_secs() / 86_400
                ));
            }
        }
        Ok(plan)
    }

    pub async fn ensure_indexes(self) -> Result<(), ActorError> {
        super::mongo_indexes::ensure(&self.db, self.audit_retention).await?;
        let seed = super::mongo_indexes::seed_beside(&self.db).await?;
        self.seed_beside.store(seed, Ordering::Relaxed);
        if seed {
            tracing::info!(
                "the seed's email index is here: users it writes without a key are found by \
                 their spelling and keyed as they are met"
            );
        }
        // The document every write that relies on, or changes, who the active administrators
        // are writes in its transaction, so such writes never interleave (see `lock_admins`).
        self.locks()
            .update_one(
                doc! {"_id": ADMINS_LOCK},
                doc! {"$setOnInsert": {"epoch": 0_i64}},
            )
            .upsert(true)
            .await
            .map_err(ActorError::mongo)?;
        Ok(())
    }

    /// Inside a transaction: takes the administrators' lock (a write to one document: two
    /// transactions that both take it conflict, and one is retried after the other commits),
    /// then checks that `caller`, if any, is still an active administrator.
    async fn lock_admins(
        &self,
        session: &mut mongodb::ClientSession,
        caller: Option<UserId>,
    ) -> Result<bool, mongodb::error::Error> {
        self.locks()
            .update_one(doc! {"_id": ADMINS_LOCK}, doc! {"$inc": {"epoch": 1_i64}})
            .session(&mut *session)
            .await?;
        let Some(caller) = caller else {
            return Ok(true);
        };
        let mut filter = active_admins();
        filter.insert("_id", caller.oid());
        let found = self.users().find_one(filter).session(&mut *session).await?;
        Ok(found.is_some())
    }

    /// Inside a transaction, after its writes: is an active administrator left?
    async fn an_admin_is_left(
        &self,
        session: &mut mongodb::ClientSession,
    ) -> Result<bool, mongodb::error::Error> {
        let left = self
            .users()
            .count_documents(active_admins())
            .session(&mut *session)
            .await?;
        Ok(left > 0)
    }

    /// Runs `writes` in a transaction (retried on transient conflicts): commits on
    /// [`Decision::Commit`], aborts otherwise. The driver's error is handed back as it is, so
    /// the caller can tell a duplicate key.
    async fn transaction<T, F>(
        &self,
        writes: F,
    ) -> Result<Result<Written<T>, ActorError>, mongodb::error::Error>
    where
        F: for<'s> Fn(
            &'s mut mongodb::ClientSession,
        )
            -> futures::future::BoxFuture<'s, Result<Decision<T>, mongodb::error::Error>>,
        T: Send,
    {
        with_retries(|| async {
            let mut session = self.db.client().start_session().await?;
            session.start_transaction().await?;
            match writes(&mut session).await {
                Ok(Decision::Commit(value)) => {
                    finish_transaction(session, Ok(())).await?;
                    Ok(Ok(Written::Applied(value)))
                }
                Ok(Decision::Abort(answer)) => {
                    // Best effort: the server aborts an abandoned transaction by itself anyway.
                    let _ = session.abort_transaction().await;
                    Ok(answer)
                }
                Err(e) => finish_transaction(session, Err(e))
                    .await
                    .map(|()| Ok(Written::Changed)),
            }
        })
        .await
    }

    /// User, wallet and the audit entry in one transaction, retried on transient conflicts; an
    /// administrator creating the account must still be one when it commits.
    pub async fn register(self, m: RegisterUser) -> Result<Written<Registered>, ActorError> {
        // BSON dates keep milliseconds; round now so the reply equals what a read returns.
        let now = bson::DateTime::now().to_chrono();
        let id = ObjectId::new();
        let user_doc = m.user.to_document(id, now);
        let wallet = Wallet::new(&id.into(), m.initial_balance, now);
        let docs = (
            user_doc.clone(),
            wallet.to_document(),
            m.audit.user(id.to_hex()).to_document(),
        );
        let (guard, this, email) = (m.guard, self.clone(), m.user.email.clone());
        let written = self
            .transaction(move |session| {
                let (this, (user, wallet, audit)) = (this.clone(), docs.clone());
                let email = email.clone();
                Box::pin(async move {
                    if let Guard::Admin(caller) = guard {
                        if !this.lock_admins(session, Some(caller)).await? {
                            return Ok(Decision::Abort(Ok(Written::Changed)));
                        }
                    }
                    this.key_spellings(session, &email).await?;
                    this.users().insert_one(user).session(&mut *session).await?;
                    this.wallets()
                        .insert_one(wallet)
                        .session(&mut *session)
                        .await?;
                    this.commit_with(session, audit).await
                })
            })
            .await;
        match written {
            Ok(Ok(done)) => {
                let user = User::from_document(&user_doc)
                    .map_err(|e| ActorError::internal("reading a stored document", e))?;
                Ok(done.map(|()| Registered { user, wallet }))
            }
            Ok(Err(e)) => Err(e),
            Err(e) if is_duplicate(&e) => {
                let field = self
                    .which_duplicate(Some(&m.user.email), Some(&m.user.username), None)
                    .await;
                Err(ActorError::Duplicate(field))
            }
            Err(e) => Err(ActorError::mongo(e)),
        }
    }

    /// Inside a registration's or an email change's transaction: users the seed's module wrote
    /// (or re-spelled) under a spelling of `email` since the last start are keyed first, so the
    /// unique key index refuses a second account of theirs (and two such users refuse each other).
    async fn key_spellings(
        &self,
        session: &mut mongodb::ClientSession,
        email: &Email,
    ) -> Result<(), mongodb::error::Error> {
        if !self.seed_beside.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut candidates = self
            .users()
            .find(doc! {"email": email.as_str()})
            .collation(case_insensitive())
            .session(&mut *session)
            .await?;
        let mut stale = Vec::new();
        while let Some(user) = candidates.next(&mut *session).await.transpose()? {
            if let Some((id, stored, key)) = stale_key(&user) {
                if &key == email.key() {
                    stale.push((id, stored));
                }
            }
        }
        for (id, stored) in stale {
            self.users()
                .update_one(
                    doc! {"_id": id, "email": stored},
                    doc! {"$set": {EMAIL_KEY: email.key().as_str()}},
                )
                .session(&mut *session)
                .await?;
        }
        Ok(())
    }

    /// Which of the given values is taken (by a user other than `except`).
    async fn which_duplicate(
        &self,
        email: Option<&Email>,
        username: Option<&Username>,
        except: Option<ObjectId>,
    ) -> DuplicateField {
        let not_me = |mut filter: Document| {
            if let Some(id) = except {
                filter.insert("_id", doc! {"$ne": id});
            }
            filter
        };
        if let Some(email) = email {
            let found = self
                .users()
                .find_one(not_me(doc! {EMAIL_KEY: email.key().as_str()}))
                .await;
            if matches!(found, Ok(Some(_))) {
                return DuplicateField::Email;
            }
        }
        if let Some(username) = username {
            let found = self
                .users()
                .find_one(not_me(doc! {"username": username.as_str()}))
                .collation(case_insensitive())
                .await;
            if matches!(found, Ok(Some(_))) {
                return DuplicateField::Username;
            }
        }
        DuplicateField::Unknown
    }

    pub async fn find_user_by_id(self, id: UserId) -> Result<Option<User>, ActorError> {
        let found = self
            .users()
            .find_one(doc! {"_id": id.oid()})
            .projection(doc! {"username_keys": 0, "email_keys": 0})
            .await
            .map_err(ActorError::mongo)?;
        found
            .map(|d| {
                User::from_document(&d)
                    .map_err(|e| ActorError::internal("reading a stored document", e))
            })
            .transpose()
    }

    pub async fn find_user_with_wallet(
        self,
        id: UserId,
    ) -> Result<Option<(User, Option<Wallet>)>, ActorError> {
        let Some(user) = self.clone().find_user_by_id(id).await? else {
            return Ok(None);
        };
        let wallet = self
            .wallets()
            .find_one(doc! {"user_id": id.to_hex()})
            .await
            .map_err(ActorError::mongo)?
            .map(|d| {
                Wallet::from_document(&d)
                    .map_err(|e| ActorError::internal("reading a stored document", e))
            })
            .transpose()?;
        Ok(Some((user, wallet)))
    }

    pub async fn record_login(
        self,
        id: UserId,
        at: DateTime<Utc>,
        audit: Vec<AuditEntry>,
    ) -> Result<(), ActorError> {
        self.users()
            .update_one(
                doc! {"_id": id.oid()},
                doc! {"$set": {"last_login_at": bson::DateTime::from_chrono(at)},
                "$inc": {"login_count": 1_i64}},
            )
            .await
            .map_err(ActorError::mongo)?;
        if audit.is_empty() {
            return Ok(());
        }
        self.audit()
            .insert_many(audit.iter().map(AuditEntry::to_document))
            .await
            .map(|_| ())
            .map_err(ActorError::mongo)
    }

    pub async fn upgrade_hash(
        self,
        id: UserId,
        verified: String,
        upgraded: String,
    ) -> Result<bool, ActorError> {
        self.users()
            .update_one(
                doc! {"_id": id.oid(), "password_hash": verified},
                doc! {"$set": {"password_hash": upgraded}},
            )
            .await
            .map(|r| r.modified_count == 1)
            .map_err(ActorError::mongo)
    }

    pub async fn write_audit(self, entry: AuditEntry) -> Result<(), ActorError> {
        self.audit()
            .insert_one(entry.to_document())
            .await
            .map(|_| ())
            .map_err(ActorError::mongo)
    }
}

impl MongoStore {
    /// The changes, if the guard and the expectations hold, with the audit entry, in one
    /// transaction. A password change raises the credential version.
    pub async fn update_user(self, m: UpdateUser) -> Result<Written<User>, ActorError> {
        let now = bson::DateTime::now().to_chrono();
        let mut set = m.changes.to_set_document(now);
        if m.changes.username.is_some() || m.changes.email.is_some() {
            // New search keys come with the change; its slot with them, for a user the backfill
            // had read but not yet keyed (its write, conditional on the old names, then misses).
            set.insert("search_slot", search_slot(&m.id.oid()));
        }
        let mut update = doc! {"$set": set};
        if m.changes.password_hash.is_some() {
            update.insert("$inc", doc! {"credential_version": 1_i64});
        }
        let filter = guarded_filter(m.id, m.guard, &m.expect);
        let audit = m.audit.to_document();
        let (id, guard, keep_an_admin, this) = (m.id, m.guard, m.keep_an_admin, self.clone());
        let new_email = m.changes.email.clone();
        let written = self
            .transaction(move |session| {
                let this = this.clone();
                let (filter, update, audit) = (filter.clone(), update.clone(), audit.clone());
                let new_email = new_email.clone();
                Box::pin(async move {
                    if let Some(abort) = this.admin_rules(session, guard, keep_an_admin).await? {
                        return Ok(abort);
                    }
                    if let Some(email) = &new_email {
                        this.key_spellings(session, email).await?;
                    }
                    let r = this
                        .users()
                        .update_one(filter, update)
                        .session(&mut *session)
                        .await?;
                    if r.matched_count == 0 {
                        return this.missing_or_changed(session, id).await;
                    }
                    if keep_an_admin && !this.an_admin_is_left(session).await? {
                        return Ok(Decision::Abort(Err(ActorError::LastAdmin)));
                    }
                    this.commit_with(session, audit).await
                })
            })
            .await;
        match written {
            Ok(Ok(Written::Applied(()))) => Ok(match self.clone().find_user_by_id(id).await? {
                Some(user) => Written::Applied(user),
                None => Written::NotFound,
            }),
            Ok(Ok(Written::NotFound)) => Ok(Written::NotFound),
            Ok(Ok(Written::Changed)) => Ok(Written::Changed),
            Ok(Err(e)) => Err(e),
            Err(e) if is_duplicate(&e) => {
                let field = self
                    .which_duplicate(
                        m.changes.email.as_ref(),
                        m.changes.username.as_ref(),
                        Some(id.oid()),
                    )
                    .await;
                Err(ActorError::Duplicate(field))
            }
            Err(e) => Err(ActorError::mongo(e)),
        }
    }

    /// Deletes the user (if the guard holds), closes (keeps) the wallet and writes the audit
    /// entry, in one transaction.
    pub async fn delete_user(self, m: DeleteUser) -> Result<Written<()>, ActorError> {
        let now = bson::DateTime::now();
        let filter = guarded_filter(m.id, m.guard, &m.expect);
        let audit = m.audit.to_document();
        let (id, guard, keep_an_admin, this) = (m.id, m.guard, m.keep_an_admin, self.clone());
        let written = self
            .transaction(move |session| {
                let this = this.clone();
                let (filter, audit) = (filter.clone(), audit.clone());
                Box::pin(async move {
                    if let Some(abort) = this.admin_rules(session, guard, keep_an_admin).await? {
                        return Ok(abort);
                    }
                    let deleted = this
                        .users()
                        .delete_one(filter)
                        .session(&mut *session)
                        .await?;
                    if deleted.deleted_count == 0 {
                        return this.missing_or_changed(session, id).await;
                    }
                    if keep_an_admin && !this.an_admin_is_left(session).await? {
                        return Ok(Decision::Abort(Err(ActorError::LastAdmin)));
                    }
                    this.wallets()
                        .update_one(
                            doc! {"user_id": id.to_hex()},
                            doc! {"$set": {"status": "closed", "updated_at": now}},
                        )
                        .session(&mut *session)
                        .await?;
                    this.commit_with(session, audit).await
                })
            })
            .await;
        written.map_err(ActorError::mongo)?
    }

    /// Inside a transaction, before a guarded write: takes the administrators' lock when the
    /// write relies on an administrator's right or may remove one, and checks the right.
    async fn admin_rules<T>(
        &self,
        session: &mut mongodb::ClientSession,
        guard: Guard,
        keep_an_admin: bool,
    ) -> Result<Option<Decision<T>>, mongodb::error::Error> {
        let caller = match guard {
            Guard::Admin(caller) => Some(caller),
            Guard::Owner | Guard::Nobody => None,
        };
        if (caller.is_some() || keep_an_admin) && !self.lock_admins(session, caller).await? {
            return Ok(Some(Decision::Abort(Ok(Written::Changed))));
        }
        Ok(None)
    }

    /// A guarded write matched nothing: the user is gone, or no longer what was expected.
    async fn missing_or_changed<T>(
        &self,
        session: &mut mongodb::ClientSession,
        id: UserId,
    ) -> Result<Decision<T>, mongodb::error::Error> {
        let exists = self
            .users()
            .find_one(doc! {"_id": id.oid()})
            .session(&mut *session)
            .await?
            .is_some();
        Ok(Decision::Abort(Ok(if exists {
            Written::Changed
        } else {
            Written::NotFound
        })))
    }

    /// One slice of a search: the users of one [`SlotRange`] (first those without a search slot,
    /// by date, then ranges of slots), or only the holders of the search's key in it
    /// ([`SearchPosition::MongoKeyed`], after [`Self::search_indexed`] began), with the fields a
    /// search reads only, filtered here. Each range is bounded at both ends where it can be, so
    /// the server reads what the range holds whatever the filter matches; the next range is
    /// sized from this one's density. Slots split any data evenly; dates cannot split users of
    /// one date (a bulk import), so only the users still without a slot are read by date.
    pub async fn search_slice(self, q: SearchUsersSlice) -> Result<SearchSlice, ActorError> {
        let (range, key) = match q.after {
            Some(SearchPosition::Mongo(range)) => (range, None),
            Some(SearchPosition::MongoKeyed(range)) => (range, index_key(&q.filter)),
            _ => (SlotRange::first(Utc::now().timestamp_millis()), None),
        };
        let keyed = key.is_some();
        let mut filter = key.map_or_else(Document::new, |(field, key)| doc! {field: key});
        filter.extend(range.filter());
        let docs = self.search_candidates(filter, q.examine).await?;
        Ok(SearchSlice {
            matches: matching(&q.filter, &docs),
            may_recur: range.may_recur(),
            next: range.next(docs.len(), q.examine).map(|next| {
                if keyed {
                    SearchPosition::MongoKeyed(next)
                } else {
                    SearchPosition::Mongo(next)
                }
            }),
        })
    }

    /// The users `filter` finds (about `expect` of them), with the fields a search compares.
    async fn search_candidates(
        &self,
        filter: Document,
        expect: u32,
    ) -> Result<Vec<Document>, ActorError> {
        mongo_memory::read(&self.users(), filter, expect)
            .await
            .map_err(ActorError::mongo)
    }

    /// Up to `limit` users `filter` finds, with the fields a search compares, read within
    /// [`SEARCH_BUDGET`] of the server's time.
    async fn read_within_budget(
        &self,
        filter: Document,
        limit: i64,
    ) -> mongodb::error::Result<Vec<Document>> {
        self.users()
            .find(filter)
            .projection(mongo_memory::searched_fields())
            .limit(limit)
            .max_time(SEARCH_BUDGET)
            .await?
            .try_collect()
            .await
    }

    /// Begins a search from the key indexes ([`SearchIndexed`]), once every user has keys: in
    /// one turn, the users written without a slot or without keys since the backfill looked
    /// (by the seed's module, an import, an earlier version), then ranges of slots of the
    /// holders of the first substring's key ([`probe_key`]) or, with no substring, of the
    /// status asked for, through the `(key, search_slot)` index, until about `examine` holders
    /// are read; the search goes on in slices of the holders ([`SearchPosition::MongoKeyed`]).
    /// A few holders take one turn, however many users there are; a key every user holds is
    /// read a slice at a time from the first, and no read of holders is unbounded (SecantusDB
    /// reads all of a key's holders whatever the limit of a query). More users without a slot
    /// or keys than `sort_at_most` (or a read of them past [`SEARCH_BUDGET`]) turn the keys off
    /// until the backfill, which looks again every 30 s, has keyed them. One field's equality
    /// and the slot only, since SecantusDB reads the whole collection for a query that combines
    /// a key with another condition on the same array or an `$or`.
    pub async fn search_indexed(self, q: SearchIndexed) -> Result<Option<Indexed>, ActorError> {
        if let Some(found) = self
            .memory
            .search(&self.db, &q.filter, q.keep, q.examine)
            .await
        {
            return Ok(Some(Indexed::Found(found)));
        }
        if !self.search_ready.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let Some((field, key)) = index_key(&q.filter) else {
            return Ok(None);
        };
        // The users the ranges of holders cannot reach: those without a slot, and without
        // keys (written behind the service's back: the seed's module, an import, an earlier
        // version), each read through its index.
        let limit = i64::from(q.sort_at_most) + 1;
        let mut lacking = vec![doc! {"search_slot": Bson::Null}];
        if field != "status" {
            lacking.push(doc! {field: Bson::Null});
        }
        let mut outside = Vec::new();
        for filter in lacking {
            match self.read_within_budget(filter, limit).await {
                Ok(docs) if outside.len() + docs.len() < limit_usize(limit) => {
                    outside.extend(docs);
                }
                Err(e) if !over_time(&e) => return Err(ActorError::mongo(e)),
                _ => {
                    // Too many: searches go on in slices of every user until the background
                    // backfill has keyed and slotted them.
                    self.search_ready.store(false, Ordering::Relaxed);
                    return Ok(None);
                }
            }
        }
        // A user without either is read twice: counted once.
        let mut matches = matching(&q.filter, &outside);
        matches.sort_unstable();
        matches.dedup();
        let mut slices = vec![SearchSlice {
            matches,
            // A backfill may key and slot them before the holders are read.
            may_recur: true,
            next: None,
        }];
        let (mut range, mut read) = (SlotRange::first_keyed(), 0u32);
        loop {
            let mut filter = doc! {field: &key};
            filter.extend(range.filter());
            let docs = self.search_candidates(filter, q.examine).await?;
            let n = u32::try_from(docs.len()).unwrap_or(u32::MAX);
            read = read.saturating_add(n);
            let left = q.examine.saturating_sub(read);
            let next = range.next(docs.len(), q.examine);
            slices.push(SearchSlice {
                matches: matching(&q.filter, &docs),
                may_recur: false,
                next: next.map(SearchPosition::MongoKeyed),
            });
            // The rest of this turn's share reads on, in a range sized to hold what is left.
            match range.next(docs.len(), left).filter(|_| left > 0) {
                Some(within) => range = within,
                None => break,
            }
        }
        Ok(Some(Indexed::Begun(slices)))
    }

    /// One backfill step ([`BackfillSearchIndex`]): the users of one range of `created_at`
    /// (sized as a search's slices are, to hold about a tenth of `rows`) without keys or slot
    /// get them, each written only if the user still has the username and email read (a rename
    /// meanwhile wrote its own). A step writes as many as fit in [`BACKFILL_STEP`] at the pace
    /// of the step before (at most a tenth of `rows`): keying a user writes some forty index
    /// entries, 3 ms on SecantusDB. A range of one date may hold any number: the users it holds
    /// beyond a step are carried to the next steps. The first step does nothing while the keys
    /// serve searches; else it looks through the key and slot indexes for a user without them,
    /// and when there is none, they serve at once.
    pub async fn backfill_search_index(
        self,
        q: BackfillSearchIndex,
    ) -> Result<Backfilled, ActorError> {
        let most = usize::try_from(q.rows / 10).unwrap_or(usize::MAX).max(1);
        let at = match q.after {
            Some(at) => match at.next {
                Some(range) if at.pending.is_empty() => MongoBackfill {
                    writes: at.writes,
                    ..self.unkeyed_in(range, most).await?
                },
                _ => at,
            },
            None if self.search_ready.load(Ordering::Relaxed) => return Ok(Backfilled::default()),
            None if !self.any_unkeyed().await? => {
                self.search_ready.store(true, Ordering::Relaxed);
                return Ok(Backfilled::default());
            }
            None => {
                let first = UserRange::first(Utc::now().timestamp_millis());
                self.unkeyed_in(first, most).await?
            }
        };
        let MongoBackfill {
            mut pending,
            next,
            writes,
        } = at;
        // The first step writes a few, to measure the pace.
        let writes = if writes == 0 { 4 } else { writes }.min(most);
        let rest = pending.split_off(writes.min(pending.len()));
        let started = Instant::now();
        let (sent, indexed) = self.key_users(pending).await?;
        // As many as this step's pace fits in the budget; a step that matched nothing (its
        // users renamed meanwhile) measures no pace.
        let writes = match indexed {
            0 => writes,
            _ => usize::try_from(
                (sent as u128).saturating_mul(BACKFILL_STEP.as_micros())
                    / started.elapsed().as_micros().max(1),
            )
            .unwrap_or(most)
            .clamp(1, most),
        };
        let remaining = !rest.is_empty() || next.is_some();
        if !remaining {
            self.search_ready.store(true, Ordering::Relaxed);
        }
        Ok(Backfilled {
            indexed,
            remaining,
            resume: remaining.then_some(MongoBackfill {
                pending: rest,
                next,
                writes,
            }),
        })
    }

    /// Writes the search keys and slot of each of `users` (read with their id, username and
    /// email) in one `update` command, each only if the user still has the username and email
    /// read. Replies with how many writes were sent and how many were made. A write the server
    /// refuses is logged and left: that user stays without keys (searches still find it) and
    /// the next backfill tries it again.
    async fn key_users(&self, users: Vec<Document>) -> Result<(usize, u64), ActorError> {
        let updates: Vec<Document> = users
            .iter()
            .filter_map(|d| {
                let id = d.get_object_id("_id").ok()?;
                let text = |field: &str| d.get_str(field).unwrap_or("");
                Some(doc! {
                    "q": {
                        "_id": id,
                        "username": d.get("username").cloned().unwrap_or(Bson::Null),
                        "email": d.get("email").cloned().unwrap_or(Bson::Null),
                    },
                    "u": {"$set": {
                        "username_keys": search_keys(text("username")),
                        "email_keys": search_keys(text("email")),
                        "search_slot": search_slot(&id),
                    }},
                })
            })
            .collect();
        let sent = updates.len();
        if sent == 0 {
            return Ok((0, 0));
        }
        let reply = self
            .db
            .run_command(doc! {"update": "users", "updates": updates, "ordered": false})
            .await
            .map_err(ActorError::mongo)?;
        if let Some(Bson::Array(errors)) = reply.get("writeErrors") {
            tracing::warn!(
                refused = errors.len(),
                first = ?errors.first(),
                "search keys refused for some users: searches still find them; the next \
                 backfill tries again"
            );
        }
        Ok((sent, get_count(&reply, "nModified")))
    }

    /// Whether some user lacks search keys or a slot, asked of the key and slot indexes.
    async fn any_unkeyed(&self) -> Result<bool, ActorError> {
        for field in ["username_keys", "email_keys", "search_slot"] {
            let found = self
                .users()
                .find_one(doc! {field: Bson::Null})
                .projection(doc! {"_id": 1})
                .await
                .map_err(ActorError::mongo)?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The users of `range` that lack search keys or a slot (id, username and email), and the
    /// range after it, sized to hold about `target` users.
    async fn unkeyed_in(
        &self,
        range: UserRange,
        target: usize,
    ) -> Result<MongoBackfill, ActorError> {
        let docs: Vec<Document> = self
            .users()
            .find(doc! {"created_at": range.condition()})
            .projection(doc! {
                "_id": 1, "username": 1, "email": 1, "username_keys": 1, "email_keys": 1,
                "search_slot": 1
            })
            .await
            .map_err(ActorError::mongo)?
            .try_collect()
            .await
            .map_err(ActorError::mongo)?;
        let next = range.next(docs.len(), u32::try_from(target).unwrap_or(u32::MAX));
        let pending = docs
            .into_iter()
            .filter(|d| {
                d.get_array("username_keys").is_err()
                    || d.get_array("email_keys").is_err()
                    || d.get_i32("search_slot").is_err()
            })
            .collect();
        Ok(MongoBackfill {
            pending,
            next,
            writes: 0,
        })
    }

    pub async fn find_users_by_ids(self, ids: Vec<UserId>) -> Result<Vec<User>, ActorError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<ObjectId> = ids.iter().map(UserId::oid).collect();
        let docs: Vec<Document> = self
            .users()
            .find(doc! {"_id": {"$in": ids}})
            .await
            .map_err(ActorError::mongo)?
            .try_collect()
            .await
            .map_err(ActorError::mongo)?;
        docs.iter()
            .map(User::from_document)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ActorError::internal("reading a stored document", e))
    }

    pub async fn list_audit(self, q: ListAudit) -> Result<Page<AuditRecord>, ActorError> {
        let mut filter = Document::new();
        if let Some(user_id) = q.user_id {
            filter.insert("user_id", user_id);
        }
        if let Some(action) = q.action {
            filter.insert("action", action);
        }
        let found = page(
            &self.audit(),
            filter,
            doc! {"at": -1, "_id": -1},
            q.skip,
            q.limit,
        )
        .await?;
        Ok(Page {
            items: found.items.iter().map(AuditRecord::from_document).collect(),
            total: found.total,
        })
    }
}
