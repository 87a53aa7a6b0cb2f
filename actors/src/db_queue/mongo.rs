//! The MongoDB store behind the DbQueueActor. Only this file speaks the driver's language.
use std::time::Duration;

use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc, oid::ObjectId, Document};
use mongodb::error::{
    ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{ClientOptions, Collation, CollationStrength, Credential, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::domain::{AuditEntry, Email, NewUser, User, UserId, Wallet};
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

        let mut last_error = None;
        for _ in 0..TRANSACTION_ATTEMPTS {
            match self
                .insert_in_transaction(&user_doc, &wallet_doc, &audit_doc)
                .await
            {
                Ok(()) => {
                    let user = User::from_document(&user_doc).map_err(ActorError::Internal)?;
                    return Ok((user, wallet));
                }
                Err(e) if is_duplicate(&e) => {
                    return Err(ActorError::Duplicate(self.which_duplicate(&new).await));
                }
                Err(e) if e.contains_label(TRANSIENT_TRANSACTION_ERROR) => last_error = Some(e),
                Err(e) => return Err(ActorError::mongo(e)),
            }
        }
        Err(last_error.map_or_else(
            || ActorError::Internal("register: transaction retries exhausted".into()),
            ActorError::mongo,
        ))
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
        if let Err(e) = inserted {
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

    async fn which_duplicate(&self, new: &NewUser) -> DuplicateField {
        let email = self
            .users()
            .find_one(doc! {"email": new.email.as_str()})
            .await;
        if matches!(email, Ok(Some(_))) {
            return DuplicateField::Email;
        }
        let username = self
            .users()
            .find_one(doc! {"username": new.username.as_str()})
            .collation(case_insensitive())
            .await;
        if matches!(username, Ok(Some(_))) {
            return DuplicateField::Username;
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
        audit: AuditEntry,
    ) -> Result<(), ActorError> {
        self.users()
            .update_one(
                doc! {"_id": id.oid()},
                doc! {"$set": {"last_login_at": bson::DateTime::from_chrono(at)},
                "$inc": {"login_count": 1_i64}},
            )
            .await
            .map_err(ActorError::mongo)?;
        self.write_audit(audit).await
    }

    pub async fn write_audit(self, entry: AuditEntry) -> Result<(), ActorError> {
        self.audit()
            .insert_one(entry.to_document())
            .await
            .map(|_| ())
            .map_err(ActorError::mongo)
    }
}
