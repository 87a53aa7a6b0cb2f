//! The MongoDB store behind the DbQueueActor. Only this file speaks the driver's language.
use std::time::Duration;

use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc, oid::ObjectId, Document};
use mongodb::error::{
    ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{ClientOptions, Collation, CollationStrength, Credential, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use futures::TryStreamExt;
use mongodb::options::FindOptions;

use super::messages::{ListAudit, SearchUsers};
use crate::domain::{
    AuditEntry, AuditRecord, Email, NewUser, User, UserChanges, UserId, Username, Wallet,
};
use crate::error::DuplicateField;
use crate::ActorError;

const DUPLICATE_KEY: i32 = 11000;
const DEFAULT_DATABASE: &str = "credit_system";
const TRANSACTION_ATTEMPTS: usize = 5;

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
    let db_name = options
        .default_database
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
    let client = Client::with_options(options).map_err(|e| format!("MongoDB client: {e}"))?;
    Ok(MongoStore {
        db: client.database(&db_name),
    })
}

/// Commits (retrying an unknown commit result) or aborts a transaction after its writes.
async fn finish_transaction(
    mut session: mongodb::ClientSession,
    writes: Result<(), mongodb::error::Error>,
) -> Result<(), mongodb::error::Error> {
    if let Err(e) = writes {
        // Best effort: the server aborts an abandoned transaction by itself anyway.
        let _ = session.abort_transaction().await;
        return Err(e);
    }
    loop {
        match session.commit_transaction().await {
            Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => continue,
            other => return other,
        }
    }
}

/// A case-insensitive literal substring match, served by a regex with every metacharacter
/// escaped (so `.*` or `(` match themselves).
fn contains_ci(needle: &str) -> Document {
    doc! {"$regex": regex::escape(needle), "$options": "i"}
}

/// Runs `attempt` until it succeeds or fails with anything but a transient transaction error.
async fn with_retries<F, Fut, T>(mut attempt: F) -> Result<T, mongodb::error::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, mongodb::error::Error>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e)
                if tries < TRANSACTION_ATTEMPTS
                    && e.contains_label(TRANSIENT_TRANSACTION_ERROR) =>
            {
                continue
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
) -> Result<(Vec<Document>, u64), ActorError> {
    let total = collection
        .count_documents(filter.clone())
        .await
        .map_err(ActorError::mongo)?;
    let options = FindOptions::builder()
        .sort(sort)
        .skip(skip)
        .limit(limit)
        .build();
    let docs = collection
        .find(filter)
        .with_options(options)
        .await
        .map_err(ActorError::mongo)?
        .try_collect()
        .await
        .map_err(ActorError::mongo)?;
    Ok((docs, total))
}

/// Username uniqueness ignores case: collation strength 2 (secondary) on the `username` index,
/// which also covers users written by the seed's service without a lower-cased copy.
fn case_insensitive() -> Collation {
    Collation::builder()
        .locale("en")
        .strength(CollationStrength::Secondary)
        .build()
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

#[derive(Clone)]
pub struct MongoStore {
    db: Database,
}

impl MongoStore {
    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    fn users(&self) -> Collection<Document> {
        self.db.collection("users")
    }

    fn wallets(&self) -> Collection<Document> {
        self.db.collection("wallets")
    }

    fn audit(&self) -> Collection<Document> {
        self.db.collection("audit_log")
    }

    pub async fn ping(self) -> Result<(), ActorError> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map(|_| ())
            .map_err(ActorError::mongo)
    }

    pub async fn ensure_indexes(self) -> Result<(), ActorError> {
        let unique = |name: &str| IndexOptions::builder().unique(true).name(name.to_string());
        let named = |name: &str| IndexOptions::builder().name(name.to_string()).build();
        let users = vec![
            IndexModel::builder()
                .keys(doc! {"email": 1})
                .options(unique("email_unique").build())
                .build(),
            IndexModel::builder()
                .keys(doc! {"username": 1})
                .options(
                    unique("username_ci_unique")
                        .collation(case_insensitive())
                        .build(),
                )
                .build(),
            IndexModel::builder()
                .keys(doc! {"status": 1})
                .options(named("status"))
                .build(),
            IndexModel::builder()
                .keys(doc! {"created_at": -1})
                .options(named("created_at"))
                .build(),
        ];
        self.users()
            .create_indexes(users)
            .await
            .map_err(ActorError::mongo)?;
        self.wallets()
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"user_id": 1})
                    .options(unique("user_id_unique").build())
                    .build(),
            )
            .await
            .map_err(ActorError::mongo)?;
        let audit = vec![
            IndexModel::builder()
                .keys(doc! {"at": -1})
                .options(named("at"))
                .build(),
            IndexModel::builder()
                .keys(doc! {"user_id": 1, "at": -1})
                .options(named("user_at"))
                .build(),
            IndexModel::builder()
                .keys(doc! {"action": 1, "at": -1})
                .options(named("action_at"))
                .build(),
        ];
        self.audit()
            .create_indexes(audit)
            .await
            .map_err(ActorError::mongo)?;
        Ok(())
    }

    /// User, wallet and the audit entry in one transaction, retried on transient conflicts.
    pub async fn register(
        self,
        new: NewUser,
        initial_balance: i64,
        audit: AuditEntry,
    ) -> Result<(User, Wallet), ActorError> {
        // BSON dates keep milliseconds; round now so the reply equals what a read returns.
        let now = bson::DateTime::now().to_chrono();
        let id = ObjectId::new();
        let user_doc = new.to_document(id, now);
        let wallet = Wallet::new(&id.into(), initial_balance, now);
        let wallet_doc = wallet.to_document();
        let audit_doc = audit.user(id.to_hex()).to_document();

        let inserted =
            with_retries(|| self.insert_in_transaction(&user_doc, &wallet_doc, &audit_doc)).await;
        match inserted {
            Ok(()) => {
                let user = User::from_document(&user_doc).map_err(ActorError::Internal)?;
                Ok((user, wallet))
            }
            Err(e) if is_duplicate(&e) => {
                let field = self
                    .which_duplicate(Some(&new.email), Some(&new.username), None)
                    .await;
                Err(ActorError::Duplicate(field))
            }
            Err(e) => Err(ActorError::mongo(e)),
        }
    }

    async fn insert_in_transaction(
        &self,
        user: &Document,
        wallet: &Document,
        audit: &Document,
    ) -> Result<(), mongodb::error::Error> {
        let mut session = self.db.client().start_session().await?;
        session.start_transaction().await?;
        let inserted = async {
            self.users().insert_one(user).session(&mut session).await?;
            self.wallets()
                .insert_one(wallet)
                .session(&mut session)
                .await?;
            self.audit().insert_one(audit).session(&mut session).await?;
            Ok::<_, mongodb::error::Error>(())
        }
        .await;
        finish_transaction(session, inserted).await
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
                .find_one(not_me(doc! {"email": email.as_str()}))
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

    pub async fn find_user_by_email(self, email: Email) -> Result<Option<User>, ActorError> {
        let found = self
            .users()
            .find_one(doc! {"email": email.as_str()})
            .await
            .map_err(ActorError::mongo)?;
        found
            .map(|d| User::from_document(&d).map_err(ActorError::Internal))
            .transpose()
    }

    pub async fn find_user_by_id(self, id: UserId) -> Result<Option<User>, ActorError> {
        let found = self
            .users()
            .find_one(doc! {"_id": id.oid()})
            .await
            .map_err(ActorError::mongo)?;
        found
            .map(|d| User::from_document(&d).map_err(ActorError::Internal))
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
            .map(|d| Wallet::from_document(&d).map_err(ActorError::Internal))
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

    pub async fn write_audit(self, entry: AuditEntry) -> Result<(), ActorError> {
        self.audit()
            .insert_one(entry.to_document())
            .await
            .map(|_| ())
            .map_err(ActorError::mongo)
    }
}

impl MongoStore {
    pub async fn update_user(
        self,
        id: UserId,
        changes: UserChanges,
        audit: AuditEntry,
    ) -> Result<Option<User>, ActorError> {
        let now = bson::DateTime::now().to_chrono();
        let set = changes.to_set_document(now);
        let audit_doc = audit.to_document();
        let updated = with_retries(|| async {
            let mut session = self.db.client().start_session().await?;
            session.start_transaction().await?;
            let writes = async {
                let r = self
                    .users()
                    .update_one(doc! {"_id": id.oid()}, doc! {"$set": set.clone()})
                    .session(&mut session)
                    .await?;
                if r.matched_count == 1 {
                    self.audit()
                        .insert_one(&audit_doc)
                        .session(&mut session)
                        .await?;
                }
                Ok::<_, mongodb::error::Error>(r.matched_count == 1)
            }
            .await;
            let matched = writes.as_ref().is_ok_and(|m| *m);
            finish_transaction(session, writes.map(|_| ())).await?;
            Ok(matched)
        })
        .await;
        match updated {
            Ok(false) => Ok(None),
            Ok(true) => self.find_user_by_id(id).await,
            Err(e) if is_duplicate(&e) => {
                let field = self
                    .which_duplicate(
                        changes.email.as_ref(),
                        changes.username.as_ref(),
                        Some(id.oid()),
                    )
                    .await;
                Err(ActorError::Duplicate(field))
            }
            Err(e) => Err(ActorError::mongo(e)),
        }
    }

    pub async fn delete_user(self, id: UserId, audit: AuditEntry) -> Result<bool, ActorError> {
        let now = bson::DateTime::now();
        let audit_doc = audit.to_document();
        with_retries(|| async {
            let mut session = self.db.client().start_session().await?;
            session.start_transaction().await?;
            let writes = async {
                let deleted = self
                    .users()
                    .delete_one(doc! {"_id": id.oid()})
                    .session(&mut session)
                    .await?;
                if deleted.deleted_count == 1 {
                    self.wallets()
                        .update_one(
                            doc! {"user_id": id.to_hex()},
                            doc! {"$set": {"status": "closed", "updated_at": now}},
                        )
                        .session(&mut session)
                        .await?;
                    self.audit()
                        .insert_one(&audit_doc)
                        .session(&mut session)
                        .await?;
                }
                Ok::<_, mongodb::error::Error>(deleted.deleted_count == 1)
            }
            .await;
            let deleted = writes.as_ref().is_ok_and(|d| *d);
            finish_transaction(session, writes.map(|_| ())).await?;
            Ok(deleted)
        })
        .await
        .map_err(ActorError::mongo)
    }

    pub async fn search_users(self, q: SearchUsers) -> Result<(Vec<User>, u64), ActorError> {
        let mut filter = Document::new();
        if let Some(username) = q.username.as_deref().filter(|s| !s.is_empty()) {
            filter.insert("username", contains_ci(username));
        }
        if let Some(email) = q.email.as_deref().filter(|s| !s.is_empty()) {
            filter.insert("email", contains_ci(email));
        }
        if let Some(status) = q.status {
            filter.insert("status", status.as_str());
        }
        let (docs, total) = page(
            &self.users(),
            filter,
            doc! {"created_at": -1, "_id": -1},
            q.skip,
            q.limit,
        )
        .await?;
        let users = docs
            .iter()
            .map(User::from_document)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ActorError::Internal)?;
        Ok((users, total))
    }

    pub async fn list_audit(self, q: ListAudit) -> Result<(Vec<AuditRecord>, u64), ActorError> {
        let mut filter = Document::new();
        if let Some(user_id) = q.user_id {
            filter.insert("user_id", user_id);
        }
        if let Some(action) = q.action {
            filter.insert("action", action);
        }
        let (docs, total) = page(
            &self.audit(),
            filter,
            doc! {"at": -1, "_id": -1},
            q.skip,
            q.limit,
        )
        .await?;
        Ok((docs.iter().map(AuditRecord::from_document).collect(), total))
    }
}
