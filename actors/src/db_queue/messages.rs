//! The DbQueueActor's messages: every database operation the service performs.
use actix::Message;
use chrono::{DateTime, Utc};

use crate::domain::{
    AuditEntry, AuditRecord, Email, NewUser, Page, Registered, Role, User, UserChanges, UserId,
    UserStatus, SEARCH_SLOTS,
};
use crate::ActorError;

/// Bring the indexes to what the service needs (idempotent): adopt equivalent ones another
/// program made, create the rest; [`ActorError::Incompatible`], changing nothing, when the data
/// cannot meet a unique index.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct EnsureIndexes;

/// The steps taking over a database takes, and the records that stop it (what
/// [`EnsureIndexes`] would do; `migrate --dry-run` prints it).
#[derive(Debug, Clone, Default)]
pub struct IndexPlan {
    pub steps: Vec<String>,
    pub conflicts: Vec<String>,
}

/// Who must still hold which right when a conditional write is applied: checked inside the
/// write's own transaction, so no concurrent suspension or demotion slips in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone (registration).
    Nobody,
    /// The user changes their own account, which must still be active.
    Owner,
    /// An administrator acts, who must still be an active administrator.
    Admin(UserId),
}

/// What the target must still be for a write to apply (compare-and-set); `None` = anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expect {
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
    pub credential_version: Option<i64>,
}

/// The outcome of a conditional write.
#[derive(Debug, Clone)]
pub enum Written<T> {
    Applied(T),
    /// No such user.
    NotFound,
    /// A precondition no longer held (the target changed, or the caller lost the right):
    /// nothing was written; read again and decide again.
    Changed,
}

impl<T> Written<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Written<U> {
        match self {
            Written::Applied(value) => Written::Applied(f(value)),
            Written::NotFound => Written::NotFound,
            Written::Changed => Written::Changed,
        }
    }
}

/// Insert a user and their wallet in one transaction: both or neither.
#[derive(Message)]
#[rtype(result = "Result<Written<Registered>, ActorError>")]
pub struct RegisterUser {
    pub user: NewUser,
    pub initial_balance: i64,
    /// `Nobody` for a registration, `Admin` for an administrator creating an account.
    pub guard: Guard,
    /// Written in the same transaction, so the trail never misses a created account.
    pub audit: AuditEntry,
}

/// Look a user up by (normalised) email, hash included, for login.
#[derive(Message)]
#[rtype(result = "Result<Option<User>, ActorError>")]
pub struct FindUserByEmail(pub Email);

/// A user and their wallet (the wallet may be missing for legacy data); fills the user cache.
#[derive(Message)]
#[rtype(result = "Result<Option<super::UserWithWallet>, ActorError>")]
pub struct FindUserWithWallet(pub UserId);

/// A user by id, hash included.
#[derive(Message)]
#[rtype(result = "Result<Option<User>, ActorError>")]
pub struct FindUserById(pub UserId);

/// Stamp a successful login: `last_login_at = at`, `login_count += 1`, and write its audit
/// entries (the sessions it ended, then the login itself) in one insert.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct RecordLogin {
    pub user_id: UserId,
    /// The user's email as stored: a look-up by email queued after this stamp, in the same
    /// batch, is answered after it.
    pub email: String,
    pub at: DateTime<Utc>,
    pub audit: Vec<AuditEntry>,
}

/// Replace a user's password hash by a fresh one of the same password (a cost or prefix
/// upgrade), only if the stored hash is still `verified`; not a password change: the credential
/// version stays. Replies whether it was replaced.
#[derive(Message)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct UpgradeHash {
    pub id: UserId,
    pub verified: String,
    pub upgraded: String,
}

/// Append an entry to the audit trail.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct WriteAudit(pub AuditEntry);

/// Apply validated changes to a user if the guard and the expectations still hold, in one
/// transaction with its audit entry. Duplicate email or username is [`ActorError::Duplicate`];
/// with `keep_an_admin`, a change that would leave no active administrator is
/// [`ActorError::LastAdmin`] and nothing is written. Replies with the user as stored.
#[derive(Message)]
#[rtype(result = "Result<Written<User>, ActorError>")]
pub struct UpdateUser {
    pub id: UserId,
    pub changes: UserChanges,
    pub guard: Guard,
    pub expect: Expect,
    pub keep_an_admin: bool,
    pub audit: AuditEntry,
}

/// Delete a user and close their wallet (kept, `status: "closed"`), in one transaction with the
/// audit entry, under the same guard and last-administrator rule as [`UpdateUser`].
#[derive(Message)]
#[rtype(result = "Result<Written<()>, ActorError>")]
pub struct DeleteUser {
    pub id: UserId,
    pub guard: Guard,
    pub expect: Expect,
    pub keep_an_admin: bool,
    pub audit: AuditEntry,
}

/// Users matching literal, case-insensitive substrings of username/email and an exact status,
/// newest first; replies with one page and the total.
#[derive(Message)]
#[rtype(result = "Result<Page<User>, ActorError>")]
pub struct SearchUsers {
    pub username: Option<String>,
    pub email: Option<String>,
    pub status: Option<UserStatus>,
    pub limit: i64,
    pub skip: u64,
}

/// What a user search matches: literal, case-insensitive substrings of the username and the
/// email (kept lower-cased), and an exact status; each only when given.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub username: Option<String>,
    pub email: Option<String>,
    pub status: Option<UserStatus>,
}

impl From<&SearchUsers> for UserFilter {
    fn from(q: &SearchUsers) -> Self {
        let given = |s: &Option<String>| {
            s.as_deref()
                .filter(|s| !s.is_empty())
                .map(str::to_lowercase)
        };
        Self {
            username: given(&q.username),
            email: given(&q.email),
            status: q.status,
        }
    }
}

impl UserFilter {
    /// Whether a stored user (its `username`, `email` and `status` fields) matches.
    pub fn matches(&self, doc: &mongodb::bson::Document) -> bool {
        // Lower-cased only where a substring is asked of it.
        let lowered = |field: &str, needle: &Option<String>| {
            needle.as_ref()?;
            doc.get_str(field).ok().map(str::to_lowercase)
        };
        self.matches_lowered(
            lowered("username", &self.username).as_deref(),
            lowered("email", &self.email).as_deref(),
            doc.get_str("status").ok(),
        )
    }

    /// Whether a user with this username and email (lower-cased; `None`: the field is not
    /// stored) and this stored status matches.
    pub fn matches_lowered(
        &self,
        username: Option<&str>,
        email: Option<&str>,
        status: Option<&str>,
    ) -> bool {
        let contains = |value: Option<&str>, needle: &Option<String>| {
            needle
                .as_ref()
                .is_none_or(|n| value.is_some_and(|v| v.contains(n.as_str())))
        };
        contains(username, &self.username)
            && contains(email, &self.email)
            && self.status.is_none_or(|s| status == Some(s.as_str()))
    }
}

/// Where a search goes on: on MongoDB the next range it reads, of every user or of the holders
/// of the search's key only (`MongoKeyed`, read through the key's index with the slot; see
/// `MongoStore::search_indexed`); on the embedded store the last id it covered.
pub enum SearchPosition {
    Mongo(SlotRange),
    MongoKeyed(SlotRange),
    Embedded(UserId),
}

/// A range of users a search reads on MongoDB: first the users without a search slot (written
/// by another program since the backfill last looked: the seed's module, an import), a range of
/// their dates at a time through the `(search_slot, created_at)` index; then ranges of slots
/// ([`crate::domain::search_slot`]). The hash spreads users evenly over the slots, so a range
/// holds the share of users its width says, whatever their dates: the next range is sized from
/// this one's density. The users without a slot come first because a backfill may slot one
/// meanwhile: it then moves into a range of slots still to be read (and the search, which
/// remembers those it met without a slot, counts it once), never into one already read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRange {
    /// Users without a slot, of one range of dates.
    Unslotted(UserRange),
    /// Slots in `[from, from + width)`; the first range starts at minus infinity and the last is
    /// open above, so a slot written out of bounds by another program is still read. (A range
    /// is never open below: SecantusDB reads such a range from the index's start, where the
    /// users without a slot are.)
    Slots { from: i32, width: i32 },
}

impl SlotRange {
    /// How wide the first range of slots is: a 65,536th of them (15 users of a million).
    const FIRST_WIDTH: i32 = SEARCH_SLOTS / 65_536;

    /// How wide the first range of slots is when only a key's holders are read: a 4,096th
    /// of them (244 users of a million holding the key).
    const FIRST_KEYED_WIDTH: i32 = SEARCH_SLOTS / 4_096;

    /// Where a search starts: the users without a slot, from the newest second (`now_ms`) back.
    pub fn first(now_ms: i64) -> Self {
        Self::Unslotted(UserRange::first(now_ms))
    }

    /// Where a read of a key's holders starts: its first range of slots. A key's holders all
    /// have slots (the service writes both at once), so there is no date stage.
    pub fn first_keyed() -> Self {
        Self::Slots {
            from: 0,
            width: Self::FIRST_KEYED_WIDTH,
        }
    }

    /// The query of the users in this range.
    pub fn filter(self) -> mongodb::bson::Document {
        use mongodb::bson::{doc, Bson};
        match self {
            Self::Unslotted(dates) => {
                doc! {"search_slot": Bson::Null, "created_at": dates.condition()}
            }
            Self::Slots { from, width } => {
                let lower = if from == 0 {
                    Bson::Double(f64::NEG_INFINITY)
                } else {
                    Bson::Int32(from)
                };
                match from
                    .checked_add(width)
                    .filter(|&until| until < SEARCH_SLOTS)
                {
                    Some(until) => doc! {"search_slot": {"$gte": lower, "$lt": until}},
                    None => doc! {"search_slot": {"$gte": lower}},
                }
            }
        }
    }

    /// Whether the users of this range may be met again in a later range of the same search
    /// (those without a slot, which a backfill may slot meanwhile).
    pub fn may_recur(self) -> bool {
        matches!(self, Self::Unslotted(_))
    }

    /// The range after this one, which held `read` users, sized to hold about `target`: the
    /// dates of the users without a slot as a search by date goes (an empty stretch crossed 16
    /// times wider at each step: such users are few or none), then the slots (at most 16 times
    /// this one's width: the spread is even, so the density can be trusted further than a
    /// date's). `None` after the last.
    pub fn next(self, read: usize, target: u32) -> Option<Self> {
        let (from, width) = match self {
            Self::Unslotted(dates) => {
                return Some(match dates.next_growing(read, target, 16) {
                    Some(dates) => Self::Unslotted(dates),
                    None => Self::Slots {
                        from: 0,
                        width: Self::FIRST_WIDTH,
                    },
                })
            }
            Self::Slots { from, width } => (from, width),
        };
        let from = from.saturating_add(width);
        if from >= SEARCH_SLOTS {
            return None;
        }
        let width = i64::from(width.max(1));
        let next = match read {
            0 => width * 16,
            read => (width * i64::from(target.max(1)) / i64::try_from(read).unwrap_or(i64::MAX))
                .min(width * 16),
        };
        let width =
            i32::try_from(next.clamp(1, i64::from(SEARCH_SLOTS - from))).unwrap_or(SEARCH_SLOTS);
        Some(Self::Slots { from, width })
    }
}

/// A range of users on MongoDB's `created_at` index, bounded at both ends wherever it can be,
/// so reading it costs what it holds and not what the collection holds (an open cursor or a
/// range with one open end reads, on some servers, every match at its first batch). The
/// ranges go from the newest back: the dates, then the users the seed's Python service stored
/// with an ISO-string date or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserRange {
    /// Dates from `from_ms` on (the newest range, open upwards for clocks ahead of ours).
    Since { from_ms: i64 },
    /// Dates in `[from_ms, until_ms)`.
    Between { from_ms: i64, until_ms: i64 },
    /// Dates before `until_ms` (before 1970: nothing, in practice).
    Before { until_ms: i64 },
    /// No `created_at`, or `null`.
    Undated,
    /// A string `created_at` (the seed's ISO dates).
    Text,
}

impl UserRange {
    /// How wide the first range is: a second back from now.
    const FIRST_WIDTH_MS: i64 = 1_000;
    /// The widest a range grows to: about a hundred years.
    const MAX_WIDTH_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

    /// The condition on `created_at` of the users in this range.
    pub fn condition(self) -> mongodb::bson::Bson {
        use mongodb::bson::{bson, Bson, DateTime};
        let date = |ms: i64| Bson::DateTime(DateTime::from_millis(ms));
        match self {
            Self::Since { from_ms } => bson!({"$gte": date(from_ms)}),
            Self::Between { from_ms, until_ms } => {
                bson!({"$gte": date(from_ms), "$lt": date(until_ms)})
            }
            Self::Before { until_ms } => bson!({"$lt": date(until_ms)}),
            Self::Undated => Bson::Null,
            // Every string sorts below the last code point (type bracketing keeps dates out).
            Self::Text => bson!({"$lt": "\u{10FFFF}"}),
        }
    }

    /// Where a search starts: the newest second.
    pub fn first(now_ms: i64) -> Self {
        Self::Since {
            from_ms: now_ms.saturating_sub(Self::FIRST_WIDTH_MS),
        }
    }

    /// The range after this one, which held `read` users: as wide as that density says holds
    /// about `target`, kept between an eighth of this one's width and twice it (so a sparse
    /// stretch is crossed quickly, and a dense one after it is not read at once). `None` after
    /// the last.
    pub fn next(self, read: usize, target: u32) -> Option<Self> {
        self.next_growing(read, target, 2)
    }

    /// [`Self::next`], growing `empty_growth` times wider (at least twice) after a range that
    /// held no one.
    pub fn next_growing(self, read: usize, target: u32, empty_growth: i64) -> Option<Self> {
        let (from_ms, width) = match self {
            Self::Since { from_ms } => (from_ms, Self::FIRST_WIDTH_MS),
            Self::Between { from_ms, until_ms } => (from_ms, until_ms.saturating_sub(from_ms)),
            Self::Before { .. } => return Some(Self::Undated),
            Self::Undated => return Some(Self::Text),
            Self::Text => return None,
        };
        if from_ms <= 0 {
            return Some(Self::Before { until_ms: from_ms });
        }
        let width = i128::from(width.max(1));
        let next = if read == 0 {
            width * i128::from(empty_growth.max(2))
        } else {
            (width * i128::from(target.max(1)) / read as i128).clamp(width / 8, width * 2)
        };
        let next = i64::try_from(next.clamp(1, i128::from(Self::MAX_WIDTH_MS)))
            .unwrap_or(Self::MAX_WIDTH_MS);
        Some(Self::Between {
            from_ms: from_ms.saturating_sub(next).max(0),
            until_ms: from_ms,
        })
    }
}

/// One slice of a user search, from where the previous one stopped: on SQLite `examine` users
/// in id order, on MongoDB one [`SlotRange`] sized to hold about `examine`. No slice holds the
/// queue for long; other operations take their turns between slices. Replies with the sort
/// keys of those that match, and where to go on.
#[derive(Message)]
#[rtype(result = "Result<SearchSlice, ActorError>")]
pub struct SearchUsersSlice {
    pub filter: UserFilter,
    /// `None`: from the start.
    pub after: Option<SearchPosition>,
    pub examine: u32,
}

pub struct SearchSlice {
    /// (`created_at`, id) of each match in the slice.
    pub matches: Vec<(DateTime<Utc>, UserId)>,
    /// These users may be met again in a later slice of the same search ([`SlotRange::may_recur`]):
    /// the search remembers their ids and counts each once.
    pub may_recur: bool,
    /// Where the next slice starts; `None` when this one reached the end.
    pub next: Option<SearchPosition>,
}

/// A search begun from the store's indexes, when they bound the work by the matches: replies
/// [`Indexed`]. `None` when no index serves this filter (a substring shorter than three
/// characters, a search index still being built, a store without one): the search then goes
/// on in slices of every user.
#[derive(Message)]
#[rtype(result = "Result<Option<Indexed>, ActorError>")]
pub struct SearchIndexed {
    pub filter: UserFilter,
    pub keep: usize,
    /// At most this many candidates are read and sorted; beyond it, the page is read along the
    /// `created_at` index instead (the matches are then dense enough that the newest come soon).
    /// On MongoDB, more users written without keys than this turn the keys off.
    pub sort_at_most: u32,
    /// On MongoDB, about how many of the key's holders this turn reads (a slice's worth).
    pub examine: u32,
}

/// How an indexed search begins.
pub enum Indexed {
    /// The whole answer, in one turn (the embedded store's trigram index).
    Found(IndexedSearch),
    /// The first slices of the search, read in one turn through the key's index (MongoDB): the
    /// users without keys, then ranges of slots of the key's holders. The search goes on from
    /// the last slice's `next` (holders only), or is done when it is `None`.
    Begun(Vec<SearchSlice>),
}

/// The sort keys of a search's newest matches, and how many match.
pub struct IndexedSearch {
    /// (`created_at`, id) of the newest `keep` matches, newest first.
    pub newest: Vec<(DateTime<Utc>, UserId)>,
    pub total: u64,
}

/// Adds to the search index some of the users stored before it existed (a backfill step: one
/// turn in the queue): on SQLite `rows` of them, on MongoDB as many as its pace fits in a step
/// (see `MongoStore::backfill_search_index`). Replies with how many were indexed and whether
/// any remain.
#[derive(Message)]
#[rtype(result = "Result<Backfilled, ActorError>")]
pub struct BackfillSearchIndex {
    pub rows: u32,
    /// On MongoDB, where the step goes on (`None`: the first step).
    pub after: Option<MongoBackfill>,
}

/// Where a backfill on MongoDB goes on: the users read but not yet written (a range of one
/// date can hold any number: they are written a step's worth at a time), then the next range
/// of `created_at`.
#[derive(Debug, Clone, Default)]
pub struct MongoBackfill {
    pub pending: Vec<mongodb::bson::Document>,
    pub next: Option<UserRange>,
    /// How many users the next step writes (0: not measured yet).
    pub writes: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Backfilled {
    pub indexed: u64,
    pub remaining: bool,
    /// On MongoDB, where the next step goes on.
    pub resume: Option<MongoBackfill>,
}

/// One step of keeping the search memory on MongoDB (`MongoStore`'s `SearchMemory`): at first
/// the change stream is opened, then the users are read `chunk` at a time, then the changes
/// since are applied, at most `chunk` of them per step. One turn in the queue each. Replies
/// whether more steps are due at once; on the embedded store there is nothing to keep.
#[derive(Message)]
#[rtype(result = "Result<bool, ActorError>")]
pub struct KeepSearchMemory {
    pub chunk: u32,
}

/// Users by id (those that exist), in no particular order.
#[derive(Message)]
#[rtype(result = "Result<Vec<User>, ActorError>")]
pub struct FindUsersByIds(pub Vec<UserId>);

/// Audit entries, newest first, filtered by subject and/or action; one page and the total.
#[derive(Message)]
#[rtype(result = "Result<Page<AuditRecord>, ActorError>")]
pub struct ListAudit {
    pub user_id: Option<String>,
    pub action: Option<String>,
    pub limit: i64,
    pub skip: u64,
}

#[cfg(test)]
mod tests {
    use super::{SlotRange, UserRange};
    use crate::domain::SEARCH_SLOTS;

    #[test]
    fn a_search_reads_the_unslotted_by_date_then_every_slot_once() {
        let now = 1_790_000_000_000;
        for users in [0_i64, 10, 10_000, 1_000_000, 50_000_000] {
            // The users without a slot, by date, from the newest second back to the undated and
            // the text dates; with none, in a few steps.
            let mut range = SlotRange::first(now);
            assert_eq!(range, SlotRange::Unslotted(UserRange::first(now)));
            let (mut until, mut steps) = (now - 1_000, 0);
            while let SlotRange::Unslotted(dates) = range {
                assert!(range.may_recur());
                match dates {
                    UserRange::Between { from_ms, until_ms } => {
                        assert_eq!(until_ms, until, "the dates are tiled");
                        until = from_ms;
                    }
                    UserRange::Before { until_ms } => assert_eq!(until_ms, 0),
                    _ => {}
                }
                range = range.next(0, 250).expect("the slots come next");
                steps += 1;
            }
            assert!(steps <= 14, "{steps} steps through an empty set of dates");
            // Then every slot once.
            let (mut covered, mut steps) = (0_i64, 0);
            loop {
                let SlotRange::Slots { from, width } = range else {
                    panic!("{range:?} after the slots")
                };
                assert!(!range.may_recur());
                assert_eq!(i64::from(from), covered, "ranges follow each other");
                assert!(width >= 1);
                covered += i64::from(width);
                let held = usize::try_from(users * i64::from(width) / i64::from(SEARCH_SLOTS))
                    .expect("a count");
                // After the first (15 users of a million), a range holds about the target
                // (250), never far more.
                assert!(
                    steps == 0 || held <= 2 * 250 + 1,
                    "{users}: {held} in {range:?}"
                );
                match range.next(held, 250) {
                    Some(next) => range = next,
                    None => break,
                }
                steps += 1;
            }
            assert_eq!(covered, i64::from(SEARCH_SLOTS), "{users}");
            assert!(
                steps < 50 || users > 1_000,
                "{users} users in {steps} steps"
            );
        }
    }

    /// A key's holders are read from the first range of slots on (no date stage): a key held
    /// by a few of a million users in five reads at most, one every user holds a slice's
    /// worth at a time after the first two.
    #[test]
    fn a_keys_holders_are_read_through_every_slot_once() {
        for (holders, reads_at_most) in [(0_i64, 5), (3, 5), (1_000_000, 1_100)] {
            let mut range = SlotRange::first_keyed();
            let (mut covered, mut reads) = (0_i64, 0);
            loop {
                let SlotRange::Slots { from, width } = range else {
                    panic!("{range:?} is not a range of slots")
                };
                assert!(!range.may_recur());
                assert_eq!(i64::from(from), covered, "ranges follow each other");
                covered += i64::from(width);
                reads += 1;
                let held = usize::try_from(holders * i64::from(width) / i64::from(SEARCH_SLOTS))
                    .expect("a count");
                assert!(reads <= 2 || held <= 2 * 1_000 + 1, "{held} in {range:?}");
                match range.next(held, 1_000) {
                    Some(next) => range = next,
                    None => break,
                }
            }
            assert_eq!(covered, i64::from(SEARCH_SLOTS), "{holders}");
            assert!(reads <= reads_at_most, "{holders} holders in {reads} reads");
        }
    }

    #[test]
    fn every_slot_range_is_bounded_below_and_the_last_open_above() {
        let mut range = SlotRange::Slots {
            from: 0,
            width: SlotRange::FIRST_WIDTH,
        };
        let first = range.filter();
        let slot = first.get_document("search_slot").expect("a condition");
        assert_eq!(slot.get_f64("$gte"), Ok(f64::NEG_INFINITY), "{first}");
        let mut last = first.clone();
        while let Some(next) = range.next(250, 250) {
            last = next.filter();
            let slot = last.get_document("search_slot").expect("a condition");
            assert!(slot.contains_key("$gte"), "{last}");
            range = next;
        }
        let slot = last.get_document("search_slot").expect("a condition");
        assert!(!slot.contains_key("$lt"), "{last}");
    }

    /// Every range a search reads, from the first to the last, with `read` users in each.
    fn walk(now_ms: i64, read: impl Fn(UserRange) -> usize) -> Vec<UserRange> {
        let mut ranges = vec![UserRange::first(now_ms)];
        while let Some(next) = ranges[ranges.len() - 1].next(read(ranges[ranges.len() - 1]), 250) {
            ranges.push(next);
            assert!(ranges.len() < 10_000, "a search ends");
        }
        ranges
    }

    #[test]
    fn the_ranges_tile_every_date_once_then_read_the_undated_and_the_text() {
        let now = 1_790_000_000_000;
        let ranges = walk(now, |_| 0);
        let mut until = None;
        for range in &ranges {
            match *range {
                UserRange::Since { from_ms } => until = Some(from_ms),
                UserRange::Between { from_ms, until_ms } => {
                    assert_eq!(Some(until_ms), until, "no gap, no overlap");
                    assert!(from_ms < until_ms);
                    until = Some(from_ms);
                }
                UserRange::Before { until_ms } => {
                    assert_eq!((Some(until_ms), until_ms), (until, 0))
                }
                UserRange::Undated | UserRange::Text => {}
            }
        }
        let tail = &ranges[ranges.len() - 3..];
        assert_eq!(
            tail,
            [
                UserRange::Before { until_ms: 0 },
                UserRange::Undated,
                UserRange::Text
            ]
        );
        assert!(
            ranges.len() < 60,
            "empty stretches are crossed quickly: {}",
            ranges.len()
        );
    }

    #[test]
    fn a_range_is_sized_from_the_density_of_the_one_before() {
        let range = UserRange::Between {
            from_ms: 1_000_000,
            until_ms: 1_100_000,
        };
        let width = |r: Option<UserRange>| match r {
            Some(UserRange::Between { from_ms, until_ms }) => until_ms - from_ms,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            width(range.next(125, 250)),
            200_000,
            "twice as wide at most"
        );
        assert_eq!(
            width(range.next(500, 250)),
            50_000,
            "half as wide for twice too many"
        );
        assert_eq!(
            width(range.next(100_000, 250)),
            12_500,
            "an eighth at least"
        );
        assert_eq!(width(range.next(0, 250)), 200_000);
        let narrow = UserRange::Between {
            from_ms: 1_000_000,
            until_ms: 1_000_001,
        };
        assert_eq!(width(narrow.next(5_000, 250)), 1, "a millisecond at least");
    }
}
