//! The search memory on MongoDB: what a user search compares (id, `created_at`, username,
//! email, status) of every user, held in the service and kept current by a change stream on
//! the users collection, so a search costs a pass over memory whatever it matches. Without it
//! a search that matches most users reads them all from the server to count them (the answer's
//! `total` is exact): seconds per 100,000 users on SecantusDB, which reads some 30,000
//! documents a second and has no covered count.
//!
//! Current for every write acknowledged before a search starts, by whichever instance or
//! program made it: before it answers, a search writes a mark (a new token in the one document
//! of [`MARKS`]) and applies the stream's events up to the mark's own. A write acknowledged
//! before the mark was written comes before it in the oplog, and a stream gives its events in
//! oplog order. An empty `getMore` proves nothing: SecantusDB shows the oplog only up to the
//! first write still committing, in any database, so while another database's bulk insert
//! commits, an acknowledged delete in this one is not yet in the stream.
//!
//! It is filled in steps ([`KeepSearchMemory`], one turn in the queue each: the stream opened
//! first, then the users a chunk at a time by ranges of slots, then the events since), and set
//! aside (searches go back to the key indexes and slices) while it fills, when the stream fails,
//! and for good when the users outnumber its bound.
//!
//! [`KeepSearchMemory`]: super::messages::KeepSearchMemory
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::{Collection, Database};
use tokio::sync::Mutex;

use super::messages::{IndexedSearch, SlotRange, UserFilter};
use crate::domain::{User, UserId, UserStatus};

/// How long an idle `getMore` of the stream waits for an event.
const STREAM_WAIT: Duration = Duration::from_millis(1);

/// The collection of the marks searches write (one document, `{_id: "search", token}`), read
/// by the stream beside the users.
pub const MARKS: &str = "search_marks";

/// The users' collection, as the stream names it.
const USERS: &str = "users";

/// How long a search waits for its mark in the stream before the key indexes answer instead
/// (30 ms on SecantusDB while another database's bulk insert of 20,000 documents commits).
const MARK_WAIT: Duration = Duration::from_millis(250);

/// How far a search's events are applied: to an empty `getMore` (filling; proves nothing
/// about acknowledged writes), or to the search's own mark.
#[derive(Clone, Copy)]
enum Until {
    Empty,
    Mark(ObjectId, Instant),
}

/// What a search compares of one user. A field not stored is `None`; a status this version
/// does not know is `None` too (no search asks for it).
struct Held {
    created_at: DateTime<Utc>,
    username: Option<Box<str>>,
    email: Option<Box<str>>,
    status: Option<UserStatus>,
}

impl Held {
    /// What a search compares of a stored user, with its sort key's id; `None` for a document
    /// no search returns (an `_id` that is not an ObjectId).
    fn of(doc: &Document) -> Option<(ObjectId, Self)> {
        let (created_at, _) = User::sort_key(doc)?;
        let id = doc.get_object_id("_id").ok()?;
        let lowered = |field: &str| doc.get_str(field).ok().map(|v| v.to_lowercase().into());
        let status = doc
            .get_str("status")
            .ok()
            .and_then(|s| UserStatus::parse(s).ok().filter(|p| p.as_str() == s));
        Some((
            id,
            Self {
                created_at,
                username: lowered("username"),
                email: lowered("email"),
                status,
            },
        ))
    }
}

type Events = ChangeStream<ChangeStreamEvent<Document>>;

enum Stage {
    /// Not filled: the next step opens the stream.
    Empty,
    /// The stream is open; the users are read a range at a time, as a search's slices read
    /// them (a range of `_id` is no bounded read on SecantusDB: it scans and sorts the whole
    /// collection, 4 s at 100,000 users, where a range of slots reads what it holds).
    Reading(Events, SlotRange),
    /// Every user read; the stream's events keep it current.
    Current(Events),
    /// More users than the bound: set aside until the service restarts.
    TooMany,
}

/// The search memory of one service instance (see the module's text).
pub struct SearchMemory {
    /// At most this many users are held (0: never filled).
    most: usize,
    state: Mutex<(Stage, HashMap<ObjectId, Held>)>,
    /// How many users are held while it answers searches; -1 while it does not.
    serving: AtomicI64,
}

impl SearchMemory {
    pub fn new(most: usize) -> Self {
        Self {
            most,
            state: Mutex::new((Stage::Empty, HashMap::new())),
            serving: AtomicI64::new(-1),
        }
    }

    /// Whether it is ever filled (a bound above 0).
    pub fn enabled(&self) -> bool {
        self.most > 0
    }

    /// How many users it holds while it answers searches.
    pub fn serving(&self) -> Option<u64> {
        u64::try_from(self.serving.load(Ordering::Relaxed)).ok()
    }

    /// One step ([`super::messages::KeepSearchMemory`]); replies whether more are due at once.
    /// A failure sets the memory aside, to be filled again from the start by a later step.
    pub async fn keep(&self, db: &Database, chunk: u32) -> mongodb::error::Result<bool> {
        if self.most == 0 {
            return Ok(false);
        }
        let mut state = self.state.lock().await;
        let (stage, held) = &mut *state;
        let taken = std::mem::replace(stage, Stage::Empty);
        match self.step(taken, held, db, chunk.max(1)).await {
            Ok((next, more)) => {
                *stage = next;
                Ok(more)
            }
            Err(e) => {
                *stage = self.set_aside(held);
                Err(e)
            }
        }
    }

    /// The stage after one step from `stage`, and whether another is due at once.
    async fn step(
        &self,
        stage: Stage,
        held: &mut HashMap<ObjectId, Held>,
        db: &Database,
        chunk: u32,
    ) -> mongodb::error::Result<(Stage, bool)> {
        let users = db.collection::<Document>(USERS);
        Ok(match stage {
            Stage::Empty => {
                held.clear();
                // Opened before the first read: every write after it is an event to apply.
                let events = db
                    .watch()
                    .pipeline([doc! {"$match": {"ns.coll": {"$in": [USERS, MARKS]}}}])
                    .full_document(FullDocumentType::UpdateLookup)
                    .max_await_time(STREAM_WAIT)
                    .await?;
                let now = Utc::now().timestamp_millis();
                (Stage::Reading(events, SlotRange::first(now)), true)
            }
            Stage::Reading(events, range) => {
                let docs = read(&users, range.filter(), chunk).await?;
                // A user met again (see `SlotRange::may_recur`) is held once, by its id.
                held.extend(docs.iter().filter_map(Held::of));
                match range.next(docs.len(), chunk) {
                    _ if held.len() > self.most => (self.too_many(held), false),
                    Some(next) => (Stage::Reading(events, next), true),
                    None => (Stage::Current(events), true),
                }
            }
            Stage::Current(mut events) => {
                match self.apply(&mut events, held, chunk, Until::Empty).await? {
                    Some(_) if held.len() > self.most => (self.too_many(held), false),
                    Some(caught_up) => {
                        if caught_up {
                            self.serve(held);
                        }
                        (Stage::Current(events), !caught_up)
                    }
                    None => (self.set_aside(held), true),
                }
            }
            Stage::TooMany => (Stage::TooMany, false),
        })
    }

    /// A search answered from memory, after the events up to its mark are applied (at most
    /// `most` of them); `None` when it does not serve (filling, set aside, the stream failing,
    /// the mark not written, or too many events waiting or too long a wait for the mark: the
    /// search takes the indexes meanwhile, and the next step applies the events).
    pub async fn search(
        &self,
        db: &Database,
        filter: &UserFilter,
        keep: usize,
        most: u32,
    ) -> Option<IndexedSearch> {
        // Not serving: no mark written, no lock taken, the indexes answer.
        self.serving()?;
        let token = match mark(db).await {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(error = %e, "a search's mark was not written: the indexes answer");
                return answered("mark_failed", None);
            }
        };
        let mut state = self.state.lock().await;
        let (stage, held) = &mut *state;
        let Stage::Current(events) = stage else {
            return answered("set_aside", None);
        };
        let by = Instant::now() + MARK_WAIT;
        match self.apply(events, held, most, Until::Mark(token, by)).await {
            Ok(Some(true)) => {}
            Ok(Some(false)) if Instant::now() >= by => return answered("mark_late", None),
            Ok(Some(false)) => return answered("events_behind", None),
            Ok(None) => {
                *stage = self.set_aside(held);
                return answered("set_aside", None);
            }
            Err(e) => {
                // The indexes answer; if the database is down they say so.
                tracing::warn!(error = %e, "the search memory's change stream failed: set aside");
                *stage = self.set_aside(held);
                return answered("set_aside", None);
            }
        }
        if held.len() > self.most {
            *stage = self.too_many(held);
            return answered("set_aside", None);
        }
        self.serve(held);
        answered("memory", Some(newest(filter, held, keep)))
    }

    /// Applies the stream's events, at most `most`, `until` an empty `getMore` or the mark:
    /// `Some(true)` when it got there, `Some(false)` when `most` or the mark's wait ran out
    /// first, `None` when the users' collection went away or was renamed (the memory is filled
    /// again).
    async fn apply(
        &self,
        events: &mut Events,
        held: &mut HashMap<ObjectId, Held>,
        most: u32,
        until: Until,
    ) -> mongodb::error::Result<Option<bool>> {
        let mut applied = 0;
        while applied < most.max(1) {
            let Some(event) = events.next_if_any().await? else {
                match until {
                    Until::Empty => return Ok(Some(true)),
                    Until::Mark(_, by) if Instant::now() >= by => return Ok(Some(false)),
                    Until::Mark(..) => continue,
                }
            };
            applied += 1;
            let coll = event.ns.as_ref().and_then(|ns| ns.coll.as_deref());
            match event.operation_type {
                OperationType::DropDatabase | OperationType::Invalidate => return Ok(None),
                OperationType::Drop if coll == Some(USERS) => return Ok(None),
                OperationType::Rename
                    if coll == Some(USERS)
                        || event.to.as_ref().and_then(|to| to.coll.as_deref()) == Some(USERS) =>
                {
                    return Ok(None)
                }
                _ if coll == Some(MARKS) => {
                    if let Until::Mark(token, _) = until {
                        if carries(&event, token) {
                            return Ok(Some(true));
                        }
                    }
                    continue;
                }
                _ if coll != Some(USERS) => continue,
                _ => {}
            }
            let id = event
                .document_key
                .as_ref()
                .and_then(|key| key.get_object_id("_id").ok());
            match event.operation_type {
                OperationType::Insert | OperationType::Update | OperationType::Replace => {
                    // The document as it is now (`updateLookup`); none when deleted since.
                    match event.full_document.as_ref().and_then(Held::of) {
                        Some((id, user)) => {
                            held.insert(id, user);
                        }
                        None => {
                            if let Some(id) = id {
                                held.remove(&id);
                            }
                        }
                    }
                }
                OperationType::Delete => {
                    if let Some(id) = id {
                        held.remove(&id);
                    }
                }
                _ => {}
            }
        }
        Ok(Some(false))
    }

    /// Serving searches, holding `held`.
    fn serve(&self, held: &HashMap<ObjectId, Held>) {
        let users = i64::try_from(held.len()).unwrap_or(i64::MAX);
        if self.serving.swap(users, Ordering::Relaxed) < 0 {
            tracing::info!(
                users,
                "the search memory holds every user: searches read it"
            );
        }
    }

    /// Not serving; the next step fills it again from the start.
    fn set_aside(&self, held: &mut HashMap<ObjectId, Held>) -> Stage {
        self.serving.store(-1, Ordering::Relaxed);
        held.clear();
        held.shrink_to_fit();
        Stage::Empty
    }

    fn too_many(&self, held: &mut HashMap<ObjectId, Held>) -> Stage {
        tracing::warn!(
            bound = self.most,
            "more users than the search memory holds (APP__ACTORS__SEARCH_MEMORY): searches read \
             the key indexes and slices of every user"
        );
        self.set_aside(held);
        Stage::TooMany
    }
}

/// Counts who answered a search the memory was serving for (`csum_search_memory_searches_total`):
/// `memory`, or why the indexes did instead.
fn answered(answer: &'static str, found: Option<IndexedSearch>) -> Option<IndexedSearch> {
    metrics::counter!("csum_search_memory_searches_total", "answer" => answer).increment(1);
    found
}

/// Writes a search's mark: a new token in the one document of [`MARKS`], which every instance
/// writes.
async fn mark(db: &Database) -> mongodb::error::Result<ObjectId> {
    let token = ObjectId::new();
    db.collection::<Document>(MARKS)
        .update_one(doc! {"_id": "search"}, doc! {"$set": {"token": token}})
        .upsert(true)
        .await?;
    Ok(token)
}

/// Whether an event of [`MARKS`] is the write of `token`: the fields it set, or the document it
/// inserted (a looked-up document is the mark as it is now, which may be a later search's).
fn carries(event: &ChangeStreamEvent<Document>, token: ObjectId) -> bool {
    let written = match event.operation_type {
        OperationType::Update => event.update_description.as_ref().map(|d| &d.updated_fields),
        OperationType::Insert => event.full_document.as_ref(),
        _ => None,
    };
    written.is_some_and(|fields| fields.get_object_id("token").is_ok_and(|t| t == token))
}

/// The fields a search compares, as a projection.
pub(super) fn searched_fields() -> Document {
    doc! {"_id": 1, "created_at": 1, "username": 1, "email": 1, "status": 1}
}

/// The users `filter` finds (about `expect` of them), with the fields a search compares.
pub(super) async fn read(
    users: &Collection<Document>,
    filter: Document,
    expect: u32,
) -> mongodb::error::Result<Vec<Document>> {
    users
        .find(filter)
        .projection(searched_fields())
        .batch_size(expect.saturating_mul(4).max(101))
        .await?
        .try_collect()
        .await
}

/// The sort keys of the newest `keep` users `filter` matches (newest first), and how many match.
fn newest(filter: &UserFilter, held: &HashMap<ObjectId, Held>, keep: usize) -> IndexedSearch {
    let mut newest = BinaryHeap::new();
    let mut total = 0u64;
    for (id, user) in held {
        if !filter.matches_lowered(
            user.username.as_deref(),
            user.email.as_deref(),
            user.status.map(|s| s.as_str()),
        ) {
            continue;
        }
        total += 1;
        newest.push(Reverse((user.created_at, UserId::from(*id))));
        if newest.len() > keep {
            newest.pop();
        }
    }
    IndexedSearch {
        newest: newest
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(key)| key)
            .collect(),
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::{newest, Held};
    use crate::db_queue::messages::UserFilter;
    use crate::domain::{User, UserStatus};
    use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime as BsonDateTime, Document};
    use std::collections::HashMap;

    /// Stored users of every shape a search meets: fields missing or not text, upper case and
    /// accents, statuses unknown or of another case, dates shared.
    fn users() -> Vec<Document> {
        let names = [
            Bson::String("Alice_Ab".into()),
            Bson::String("ÉMILE".into()),
            Bson::String(String::new()),
            Bson::Int32(7),
            Bson::Null,
        ];
        let statuses = ["active", "Active", "suspended", "inactive", "gone"];
        let mut users = Vec::new();
        for i in 0..200_i64 {
            let mut user = doc! {
                "_id": ObjectId::new(),
                "created_at": BsonDateTime::from_millis(1_700_000_000_000 + (i % 7) * 1000),
            };
            let pick = |n: usize| usize::try_from(i).unwrap_or(0) % n;
            if i % 11 != 0 {
                user.insert("username", names[pick(names.len())].clone());
            }
            if i % 13 != 0 {
                user.insert("email", format!("x{i}@Ex{}.ORG", i % 3));
            }
            if i % 17 != 0 {
                user.insert("status", statuses[pick(statuses.len())]);
            }
            users.push(user);
        }
        users
    }

    #[test]
    fn memory_answers_as_the_filter_of_every_stored_user() {
        let users = users();
        let held: HashMap<_, _> = users.iter().filter_map(Held::of).collect();
        assert_eq!(held.len(), users.len());
        let needles = [
            None,
            Some("a"),
            Some("AB"),
            Some("émi"),
            Some("@ex1"),
            Some("zz"),
        ];
        let statuses = [None, Some(UserStatus::Active), Some(UserStatus::Suspended)];
        for username in needles {
            for email in needles {
                for status in statuses {
                    let filter = UserFilter {
                        username: username.map(str::to_lowercase),
                        email: email.map(str::to_lowercase),
                        status,
                    };
                    let mut want: Vec<_> = users
                        .iter()
                        .filter(|d| filter.matches(d))
                        .filter_map(User::sort_key)
                        .collect();
                    want.sort_unstable_by(|a, b| b.cmp(a));
                    for keep in [0, 3, 500] {
                        let got = newest(&filter, &held, keep);
                        assert_eq!(got.total, want.len() as u64, "{filter:?}");
                        let page: Vec<_> = want.iter().take(keep).cloned().collect();
                        assert_eq!(got.newest, page, "{filter:?} keep {keep}");
                    }
                }
            }
        }
    }
}
