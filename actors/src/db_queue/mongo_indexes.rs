//! The MongoDB indexes the service needs, and how it takes over a database another program
//! made: the seed's Python module leaves `email_1` (unique), `username_1`, `status_1` and
//! `created_at_1`. An existing index with the same keys and collation as one we need is adopted
//! under its own name (creating ours beside it would be refused, and the seed's module may
//! still be using it); one we need unique but that is not is replaced; the rest are created.
//! Emails and usernames are unique regardless of case (collation strength 2), so the seed's
//! mixed-case emails are found however they are typed and block their case variants, without
//! rewriting its documents. Where the data cannot meet that (two values equal but for case),
//! nothing is changed and start-up stops naming the records.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{Collation, CollationStrength, IndexOptions};
use mongodb::{Database, IndexModel};

use super::messages::IndexPlan;
use crate::ActorError;

/// Email and username uniqueness ignore case: collation strength 2 (secondary) on their unique
/// indexes, which also covers users the seed's service wrote (mixed-case emails, no lower-cased
/// username); look-ups by email use it too, so such an email is found however it is typed.
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
}

/// What "keep for ever" is on a TTL index that exists already (its expiry can be changed but
/// not removed): the largest expiry MongoDB takes, 68 years.
const FOREVER_S: u64 = i32::MAX as u64;

fn wanted(audit_retention: Option<Duration>) -> Vec<Wanted> {
    let index = |collection, name, keys, unique, ci| Wanted {
        collection,
        name,
        keys,
        unique,
        ci,
        ttl: None,
    };
    let audit_at = Wanted {
        ttl: audit_retention.map(|r| r.as_secs().clamp(1, FOREVER_S)),
        ..index("audit_log", "at", doc! {"at": -1}, false, false)
    };
    vec![
        index("users", "email_ci_unique", doc! {"email": 1}, true, true),
        index(
            "users",
            "username_ci_unique",
            doc! {"username": 1},
            true,
            true,
        ),
        index("users", "status", doc! {"status": 1}, false, false),
        index("users", "created_at", doc! {"created_at": -1}, false, false),
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
    ]
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
    Ok(seen
        .into_values()
        .filter(|holders| holders.len() > 1)
        .map(|holders| {
            let named: Vec<String> = holders
                .iter()
                .map(|(value, id)| format!("{value:?} ({id})"))
                .collect();
            named.join(" and ")
        })
        .collect())
}

/// What taking over this database would do, without changing anything.
pub(super) async fn plan(
    db: &Database,
    audit_retention: Option<Duration>,
) -> Result<IndexPlan, ActorError> {
    let mut plan = IndexPlan::default();
    let mut present: BTreeMap<&str, Vec<Existing>> = BTreeMap::new();
    for want in wanted(audit_retention) {
        if !present.contains_key(want.collection) {
            present.insert(want.collection, existing(db, want.collection).await?);
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
    Ok(plan)
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
            "the users collection holds values this version keeps unique regardless of case: \
             {}; give each of them a value of its own (or remove the duplicate account) with the \
             seed's tools, then start again; no document or index was changed",
            plan.conflicts.join("; ")
        )));
    }
    for want in wanted(audit_retention) {
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
            Step::Keep => continue,
            Step::Adopt(name) => {
                tracing::info!(index = %name, as_ = want.name, "existing index adopted");
                continue;
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
            .build();
        if want.ci {
            options.collation = Some(case_insensitive());
        }
        collection
            .create_index(
                IndexModel::builder()
                    .keys(want.keys)
                    .options(options)
                    .build(),
            )
            .await
            .map_err(ActorError::mongo)?;
    }
    Ok(())
}
