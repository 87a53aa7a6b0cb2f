//! The MongoDB indexes the service needs, and how it takes over a database another program
//! made: the seed's Python module leaves `email_1` (unique), `username_1`, `status_1` and
//! `created_at_1`. An existing index with the same keys and collation as one we need is adopted
//! under its own name (creating ours beside it would be refused, and the seed's module may
//! still be using it); one we need unique but that is not is replaced; the rest are created.
//! An account is its email's key (SPEC 10, [`EmailKey`]): stored as `email_key` under a plain
//! unique index, and written onto every user that lacks it (the seed's, an earlier version's)
//! before that index is made. Where the seed's own `email_1` index is found, its module may still
//! be writing users without a key (or changing the email of a keyed one): start-up then keys
//! every user whose key is missing or stale, and the store looks users up by their spelling too
//! (through a case-insensitive, non-unique `email_ci` index; the key decides) and keys them as it
//! meets them ([`seed_beside`]). Usernames are unique regardless of case (collation strength
//! 2; they are ASCII). Where the data cannot meet a unique index (two emails of one key, two
//! usernames equal but for case), nothing is changed and start-up stops naming the records.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{Collation, CollationStrength, IndexOptions};
use mongodb::{Database, IndexModel};

use super::messages::IndexPlan;
use crate::domain::EmailKey;
use crate::ActorError;

/// Username uniqueness ignores case: collation strength 2 (secondary) on its unique index,
/// which also covers users the seed's service wrote (no lower-cased username).
pub fn case_insensitive() -> Collation {
    Collation::builder()
        .locale("en")
        .strength(CollationStrength::Secondary)
        .build()
}

/// One index the service needs.
struct Wanted {
    collection: &'static str,
    name: &'static str,
    keys: Document,
    unique: bool,
    /// Case-insensitive (collation strength 2).
    ci: bool,
    /// Documents expire this many seconds after the indexed date (a TTL index).
    ttl: Option<u64>,
    /// Only documents that have the field are indexed.
    sparse: bool,
}

/// The field of a user's email key, and the index that makes it unique. Sparse (only users that
/// have a key), so the seed's module can go on inserting unkeyed users meanwhile; not partial,
/// since a partial index serves no plain equality or `$in` query (MongoDB's planner cannot
/// prove such a query implies its filter, and SecantusDB scans the collection then).
pub const EMAIL_KEY: &str = "email_key";
const EMAIL_KEY_INDEX: &str = "email_key_unique";
/// The case-insensitive email index of earlier versions: identity is the key now.
const RETIRED_EMAIL_INDEX: &str = "email_ci_unique";
/// The search key indexes of earlier versions, dropped once their `…_slot` successors exist:
/// those serve the same equality, and also bound it by slot.
const RETIRED_KEY_INDEXES: [&str; 2] = ["username_keys", "email_keys"];

/// Users that have no email key yet.
pub fn unkeyed() -> Document {
    doc! {EMAIL_KEY: {"$exists": false}}
}

/// What "keep for ever" is on a TTL index that exists already (its expiry can be changed but
/// not removed): the largest expiry MongoDB takes, 68 years.
const FOREVER_S: u64 = i32::MAX as u64;

/// The index the store finds users by spelling through while the seed's module writes beside
/// it: case-insensitive, not unique (the key decides who is who).
const SEED_EMAIL_INDEX: &str = "email_ci";

fn wanted(audit_retention: Option<Duration>, seed: bool) -> Vec<Wanted> {
    let index = |collection, name, keys, unique, ci| Wanted {
        collection,
        name,
        keys,
        unique,
        ci,
        ttl: None,
        sparse: false,
    };
    let audit_at = Wanted {
        ttl: audit_retention.map(|r| r.as_secs().clamp(1, FOREVER_S)),
        ..index("audit_log", "at", doc! {"at": -1}, false, false)
    };
    let mut all = vec![
        Wanted {
            sparse: true,
            ..index("users", EMAIL_KEY_INDEX, doc! {EMAIL_KEY: 1}, true, false)
        },
        index(
            "users",
            "username_ci_unique",
            doc! {"username": 1},
            true,
            true,
        ),
        index("users", "status", doc! {"status": 1}, false, false),
        index("users", "created_at", doc! {"created_at": -1}, false, false),
        // A search reads a key's (or a status's) holders a range of slots at a time
        // (`MongoStore::search_indexed`): equality and a bounded range of one index.
        index(
            "users",
            "username_keys_slot",
            doc! {"username_keys": 1, "search_slot": 1},
            false,
            false,
        ),
        index(
            "users",
            "email_keys_slot",
            doc! {"email_keys": 1, "search_slot": 1},
            false,
            false,
        ),
        index(
            "users",
            "status_slot",
            doc! {"status": 1, "search_slot": 1},
            false,
            false,
        ),
        index(
            "users",
            "search_slot",
            doc! {"search_slot": 1, "created_at": -1},
            false,
            false,
        ),
        index(
            "wallets",
            "user_id_unique",
            doc! {"user_id": 1},
            true,
            false,
        ),
        audit_at,
        index(
            "audit_log",
            "user_at",
            doc! {"user_id": 1, "at": -1},
            false,
            false,
        ),
        index(
            "audit_log",
            "action_at",
            doc! {"action": 1, "at": -1},
            false,
            false,
        ),
    ];
    if seed {
        all.push(index(
            "users",
            SEED_EMAIL_INDEX,
            doc! {"email": 1},
            false,
            true,
        ));
    }
    all
}

/// What to do about one wanted index.
enum Step {
    /// It exists under our name.
    Keep,
    /// An equivalent index exists under another name: use it as it is.
    Adopt(String),
    /// An index on the same keys exists but is not unique: drop it, create ours.
    Replace(String),
    Create,
}

/// An existing index, as far as matching goes.
struct Existing {
    name: String,
    keys: Vec<(String, i64)>,
    unique: bool,
    ci: bool,
    ttl: Option<u64>,
}

/// Index keys compared by field and direction (a stored `1` may be an int32, int64 or double).
fn key_pattern(keys: &Document) -> Vec<(String, i64)> {
    keys.iter()
        .map(|(field, direction)| {
            let direction = match direction {
                Bson::Int32(i) => i64::from(*i),
                Bson::Int64(i) => *i,
                Bson::Double(f) => *f as i64,
                _ => 0,
            };
            (field.clone(), direction)
        })
        .collect()
}

async fn existing(db: &Database, collection: &str) -> Result<Vec<Existing>, ActorError> {
    let cursor = db.collection::<Document>(collection).list_indexes().await;
    let models: Vec<IndexModel> = match cursor {
        Ok(cursor) => cursor.try_collect().await.map_err(ActorError::mongo)?,
        // A collection that does not exist yet has no indexes.
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 26) => {
            Vec::new()
        }
        Err(e) => return Err(ActorError::mongo(e)),
    };
    Ok(models
        .into_iter()
        .map(|m| {
            let options = m.options.unwrap_or_default();
            Existing {
                name: options.name.clone().unwrap_or_default(),
                keys: key_pattern(&m.keys),
                unique: options.unique == Some(true),
                ttl: options.expire_after.map(|d| d.as_secs()),
                ci: options
                    .collation
                    .as_ref()
                    .and_then(|c| c.strength)
                    .is_some_and(|s| {
                        matches!(s, CollationStrength::Primary | CollationStrength::Secondary)
                    }),
            }
        })
        .collect())
}

/// The expiry to set on the existing index behind `want`, if it must change: a TTL index
/// whose retention changed, or one that must stop expiring (`FOREVER_S`). (A new index gets its
/// expiry when it is created.)
fn expiry_change(want: &Wanted, present: &[Existing]) -> Option<u64> {
    let keys = key_pattern(&want.keys);
    let same = present.iter().find(|e| e.keys == keys && e.ci == want.ci)?;
    match (want.ttl, same.ttl) {
        (Some(wanted), current) if current != Some(wanted) => Some(wanted),
        (None, Some(current)) if current != FOREVER_S => Some(FOREVER_S),
        _ => None,
    }
}

fn step(want: &Wanted, present: &[Existing]) -> Step {
    let keys = key_pattern(&want.keys);
    let Some(same) = present.iter().find(|e| e.keys == keys && e.ci == want.ci) else {
        return Step::Create;
    };
    if same.name == want.name {
        Step::Keep
    } else if same.unique || !want.unique {
        Step::Adopt(same.name.clone())
    } else {
        Step::Replace(same.name.clone())
    }
}

/// Values of `field` that are equal but for case, with the ids holding them.
async fn case_clashes(db: &Database, field: &str) -> Result<Vec<String>, ActorError> {
    let mut seen: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut cursor = db
        .collection::<Document>("users")
        .find(doc! {})
        .projection(doc! {field: 1})
        .await
        .map_err(ActorError::mongo)?;
    while let Some(user) = cursor.try_next().await.map_err(ActorError::mongo)? {
        let Ok(value) = user.get_str(field) else {
            continue;
        };
        let id = user
            .get_object_id("_id")
            .map(|id| id.to_hex())
            .unwrap_or_default();
        seen.entry(value.to_lowercase())
            .or_default()
            .push((value.to_string(), id));
    }
    Ok(clashes(seen))
}

/// The groups of more than one holder, each as `"value" (id) and "value" (id)`.
fn clashes<K>(seen: BTreeMap<K, Vec<(String, String)>>) -> Vec<String> {
    seen.into_values()
        .filter(|holders| holders.len() > 1)
        .map(|holders| {
            let named: Vec<String> = holders
                .iter()
                .map(|(value, id)| format!("{value:?} ({id})"))
                .collect();
            named.join(" and ")
        })
        .collect()
}

/// Emails that share a key, with the ids holding them, and how many users have no key, or a key
/// that is not their email's (the seed's module changed the email).
async fn key_clashes(db: &Database) -> Result<(Vec<String>, u64), ActorError> {
    let mut seen: BTreeMap<EmailKey, Vec<(String, String)>> = BTreeMap::new();
    let mut unkeyed = 0;
    let mut cursor = db
        .collection::<Document>("users")
        .find(doc! {})
        .projection(doc! {"email": 1, EMAIL_KEY: 1})
        .await
        .map_err(ActorError::mongo)?;
    while let Some(user) = cursor.try_next().await.map_err(ActorError::mongo)? {
        let Ok(email) = user.get_str("email") else {
            continue;
        };
        let key = EmailKey::of(email);
        if user.get_str(EMAIL_KEY) != Ok(key.as_str()) {
            unkeyed += 1;
        }
        let id = user
            .get_object_id("_id")
            .map(|id| id.to_hex())
            .unwrap_or_default();
        seen.entry(key).or_default().push((email.to_string(), id));
    }
    Ok((clashes(seen), unkeyed))
}

/// Writes its email's key onto every user whose key is missing or stale, many users per `update`
/// command; each only if its email is still the one read.
async fn key_users(db: &Database) -> Result<u64, ActorError> {
    let users = db.collection::<Document>("users");
    let mut cursor = users
        .find(doc! {})
        .projection(doc! {"email": 1, EMAIL_KEY: 1})
        .await
        .map_err(ActorError::mongo)?;
    let mut keyed = 0;
    let mut batch: Vec<Document> = Vec::new();
    loop {
        let next = cursor.try_next().await.map_err(ActorError::mongo)?;
        if let Some(user) = &next {
            if let (Ok(id), Ok(email)) = (user.get_object_id("_id"), user.get_str("email")) {
                let key = EmailKey::of(email);
                if user.get_str(EMAIL_KEY) != Ok(key.as_str()) {
                    batch.push(doc! {
                        "q": {"_id": id, "email": email},
                        "u": {"$set": {EMAIL_KEY: key.as_str()}},
                    });
                }
            }
        }
        if batch.len() >= 500 || (next.is_none() && !batch.is_empty()) {
            let reply = db
                .run_command(doc! {"update": "users", "updates": std::mem::take(&mut batch)})
                .await
                .map_err(ActorError::mongo)?;
            if let Some(Bson::Array(errors)) = reply.get("writeErrors") {
                return Err(ActorError::Incompatible(format!(
                    "keying users' emails failed ({} errors, the first: {:?}); start again",
                    errors.len(),
                    errors.first()
                )));
            }
            keyed += get_count(&reply, "nModified");
        }
        if next.is_none() {
            return Ok(keyed);
        }
    }
}

/// A count in a command's reply (an int32 or int64), 0 when missing.
pub(super) fn get_count(reply: &Document, field: &str) -> u64 {
    match reply.get(field) {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// Whether the seed's module may be writing users beside the service: a plain (not
/// case-insensitive) index on `email` is there, as the seed makes (`email_1`).
pub(super) async fn seed_beside(db: &Database) -> Result<bool, ActorError> {
    let email = vec![("email".to_string(), 1)];
    Ok(existing(db, "users")
        .await?
        .iter()
        .any(|e| e.keys == email && !e.ci))
}

/// What taking over this database would do, without changing anything.
pub(super) async fn plan(
    db: &Database,
    audit_retention: Option<Duration>,
) -> Result<IndexPlan, ActorError> {
    let mut plan = IndexPlan::default();
    let seed = seed_beside(db).await?;
    let users = existing(db, "users").await?;
    let key_index = users.iter().any(|e| e.name == EMAIL_KEY_INDEX);
    let unkeyed_left = db
        .collection::<Document>("users")
        .find_one(unkeyed())
        .projection(doc! {"_id": 1})
        .await
        .map_err(ActorError::mongo)?
        .is_some();
    if !key_index || unkeyed_left || seed {
        let (clashes, unkeyed) = key_clashes(db).await?;
        for clash in clashes {
            plan.conflicts
                .push(format!("emails that are one account (one key): {clash}"));
        }
        if unkeyed > 0 {
            plan.steps.push(format!(
                "write the email key (SPEC 10) onto {unkeyed} users (missing or stale)"
            ));
        }
    }
    if users.iter().any(|e| e.name == RETIRED_EMAIL_INDEX) {
        plan.steps.push(format!(
            "drop index users.{RETIRED_EMAIL_INDEX} (the email key decides identity now)"
        ));
    }
    let mut present: BTreeMap<&str, Vec<Existing>> = BTreeMap::new();
    for want in wanted(audit_retention, seed) {
        if !present.contains_key(want.collection) {
            let mut on = existing(db, want.collection).await?;
            // Dropped before any other step.
            on.retain(|e| e.name != RETIRED_EMAIL_INDEX);
            present.insert(want.collection, on);
        }
        let on = &present[want.collection];
        let what = format!("{}.{}", want.collection, want.name);
        if let Some(seconds) = expiry_change(&want, on) {
            plan.steps.push(format!(
                "set the expiry of index {what} to {seconds} s (collMod)"
            ));
        }
        let action = match step(&want, on) {
            Step::Keep => continue,
            Step::Adopt(name) => format!("adopt index {}.{name} as {what}", want.collection),
            Step::Replace(name) => format!(
                "replace index {}.{name} (not unique) by {what}",
                want.collection
            ),
            Step::Create => format!("create index {what}"),
        };
        let needs_unique_ci = want.unique && want.ci && !action.starts_with("adopt");
        if needs_unique_ci {
            let field = want.keys.keys().next().cloned().unwrap_or_default();
            for clash in case_clashes(db, &field).await? {
                plan.conflicts
                    .push(format!("{field}s equal but for case: {clash}"));
            }
        }
        plan.steps.push(action);
    }
    for name in retired_key_indexes(&users) {
        plan.steps.push(format!(
            "drop index users.{name} (users.{name}_slot serves its searches)"
        ));
    }
    Ok(plan)
}

/// The search key indexes of earlier versions among `present`: of their names and on their
/// field alone.
fn retired_key_indexes(present: &[Existing]) -> Vec<&str> {
    present
        .iter()
        .filter(|e| RETIRED_KEY_INDEXES.contains(&e.name.as_str()))
        .filter(|e| e.keys == [(e.name.clone(), 1)])
        .map(|e| e.name.as_str())
        .collect()
}

/// Brings one index to `want`: its expiry changed in place, an equal one adopted, a different
/// one of its name replaced, a missing one created.
async fn ensure_index(db: &Database, want: Wanted) -> Result<(), ActorError> {
    let present = existing(db, want.collection).await?;
    let collection = db.collection::<Document>(want.collection);
    if let Some(seconds) = expiry_change(&want, &present) {
        let keys = key_pattern(&want.keys);
        let name = present
            .iter()
            .find(|e| e.keys == keys && e.ci == want.ci)
            .map(|e| e.name.clone())
            .unwrap_or_default();
        db.run_command(doc! {
            "collMod": want.collection,
            "index": {"name": &name, "expireAfterSeconds": seconds as i64},
        })
        .await
        .map_err(ActorError::mongo)?;
        tracing::info!(index = %name, expire_after_s = seconds, "index expiry changed");
    }
    match step(&want, &present) {
        Step::Keep => return Ok(()),
        Step::Adopt(name) => {
            tracing::info!(index = %name, as_ = want.name, "existing index adopted");
            return Ok(());
        }
        Step::Replace(name) => {
            collection
                .drop_index(name.clone())
                .await
                .map_err(ActorError::mongo)?;
            tracing::info!(index = %name, by = want.name, "index replaced");
        }
        Step::Create => {}
    }
    let mut options = IndexOptions::builder()
        .name(want.name.to_string())
        .unique(want.unique.then_some(true))
        .expire_after(want.ttl.map(Duration::from_secs))
        .sparse(want.sparse.then_some(true))
        .build();
    if want.ci {
        options.collation = Some(case_insensitive());
    }
    let index = IndexModel::builder()
        .keys(want.keys)
        .options(options)
        .build();
    collection
        .create_index(index)
        .await
        .map_err(ActorError::mongo)?;
    Ok(())
}

/// Brings the indexes to what the service needs (see the module's comment). Refuses, changing
/// nothing, when the data cannot meet a unique index.
pub(super) async fn ensure(
    db: &Database,
    audit_retention: Option<Duration>,
) -> Result<(), ActorError> {
    let plan = plan(db, audit_retention).await?;
    if !plan.conflicts.is_empty() {
        return Err(ActorError::Incompatible(format!(
            "the users collection holds accounts this version must keep apart: {}; give each \
             of them an email (or username) of its own, or remove the duplicate account, with \
             the seed's tools, then start again; no document or index was changed",
            plan.conflicts.join("; ")
        )));
    }
    let seed = seed_beside(db).await?;
    if plan
        .steps
        .iter()
        .any(|s| s.starts_with("write the email key"))
    {
        let keyed = key_users(db).await?;
        tracing::info!(users = keyed, "email keys written");
    }
    if existing(db, "users")
        .await?
        .iter()
        .any(|e| e.name == RETIRED_EMAIL_INDEX)
    {
        db.collection::<Document>("users")
            .drop_index(RETIRED_EMAIL_INDEX)
            .await
            .map_err(ActorError::mongo)?;
        tracing::info!(
            index = RETIRED_EMAIL_INDEX,
            "index retired: the email key decides identity"
        );
    }
    for want in wanted(audit_retention, seed) {
        ensure_index(db, want).await?;
    }
    let users = db.collection::<Document>("users");
    for name in retired_key_indexes(&existing(db, "users").await?) {
        users.drop_index(name).await.map_err(ActorError::mongo)?;
        tracing::info!(
            index = name,
            "index retired: its _slot successor serves searches"
        );
    }
    Ok(())
}
