//! Account administration: create (administrators), read, change and delete (the owner or an
//! administrator), search and the audit trail (administrators).
//!
//! A change is decided on the account as read, then written as a compare-and-set under the
//! caller's right (see [`Guard`] and [`Expect`]): if anything it was decided on changed in the
//! meantime, nothing is written and the decision is taken again on a fresh read. So no
//! concurrent request undoes a suspension or a demotion, and a demoted administrator has no
//! administrator's power from the moment the demotion is answered.
use std::sync::Arc;

use super::sign_in::end_attempt;
use super::{
    may_act_on, AccountChanges, Accounts, CreateAccount, DeleteAccount, GetAccount, ReadAudit,
    RequireAdmin, SearchAccounts, UpdateAccount, WRITE_ATTEMPTS,
};
use crate::db_queue::{self, Expect, FindUserById, Guard, Written};
use crate::domain::{AttemptSource, ClientIp, EmailKey, Password, UserId, UserStatus};
use crate::domain::{AuditEntry, AuditRecord, EndReason, NewUser, Page, Role, User, UserChanges};
use crate::error::Refusal;
use crate::hasher::{HashPassword, VerifyPassword};
use crate::session::{BeginLoginAttempt, TakeRateToken};
use crate::session_store::AttemptOutcome;
use crate::token::{RevokeUserSessions, ValidateAccess};
use crate::ActorError;

const NOT_FOUND: ActorError = ActorError::NotFound("User");

pub(super) async fn create(a: Arc<Accounts>, m: CreateAccount) -> Result<User, ActorError> {
    let admin = a.admin(m.token).await?;
    let password_hash = a.hasher.call(HashPassword::new(m.password)).await?;
    let audit = AuditEntry::new("user.create", "success")
        .actor(admin.id)
        .email(m.email.as_str())
        .ip(m.ip)
        .detail("role", m.role.as_str())
        .detail("status", m.status.as_str());
    let user = NewUser {
        email: m.email,
        username: m.username,
        password_hash,
        role: m.role,
        status: m.status,
    };
    let written = a.insert(user, Guard::Admin(admin.id), audit).await?;
    match written {
        Written::Applied(created) => Ok(created.user),
        // The caller stopped being an administrator while the password was hashed.
        Written::NotFound | Written::Changed => Err(ActorError::Forbidden(Refusal::AdminRequired)),
    }
}

pub(super) async fn get(a: Arc<Accounts>, m: GetAccount) -> Result<User, ActorError> {
    let (_, caller) = a.caller(m.token).await?;
    may_act_on(&caller, &m.target)?;
    if caller.id == m.target {
        return Ok(caller);
    }
    a.db.call(FindUserById(m.target)).await?.ok_or(NOT_FOUND)
}

/// The account to act on, as stored now (the caller's own, already read, or another's).
async fn target(a: &Accounts, caller: &User, id: UserId) -> Result<User, ActorError> {
    if caller.id == id {
        return Ok(caller.clone());
    }
    a.db.call(FindUserById(id)).await?.ok_or(NOT_FOUND)
}

/// True when `user` is an active administrator whom the change would make anything else.
fn removes_an_admin(user: &User, status: Option<UserStatus>, role: Option<Role>) -> bool {
    user.role == Role::Admin
        && user.status == UserStatus::Active
        && (status.is_some_and(|s| s != UserStatus::Active)
            || role.is_some_and(|r| r != Role::Admin))
}

pub(super) async fn update(a: Arc<Accounts>, m: UpdateAccount) -> Result<User, ActorError> {
    let principal = a.tokens.call(ValidateAccess(m.token)).await?;
    let asked = m.changes;
    let mut password = PasswordWork::default();
    for _ in 0..WRITE_ATTEMPTS {
        let caller = a.account(&principal).await?;
        may_act_on(&caller, &m.target)?;
        let target = target(&a, &caller, m.target).await?;
        let is_self = caller.id == target.id;

        // Status and role are an administrator's; asking for the current value is no change,
        // and is never written.
        let status = asked.status.filter(|s| *s != target.status);
        let role = asked.role.filter(|r| *r != target.role);
        let privileged = status.is_some() || role.is_some();
        if privileged && caller.role != Role::Admin {
            return Err(ActorError::Forbidden(Refusal::AdminChangesStatusAndRole));
        }
        let mut changes = UserChanges {
            email: asked.email.clone(),
            username: asked.username.clone(),
            password_hash: None,
            status,
            role,
        };
        let mut expect = Expect::default();
        changes.password_hash = password
            .new_hash(&a, &asked, &target, is_self, m.ip, &mut expect)
            .await?;
        if changes.is_empty() {
            // Nothing to change: like any idempotent PUT, answer with the account as it is.
            return Ok(target);
        }
        let guard = if privileged || !is_self {
            Guard::Admin(caller.id)
        } else {
            Guard::Owner
        };
        if privileged {
            expect.status = Some(target.status);
            expect.role = Some(target.role);
        }
        let audit = AuditEntry::new("user.update", "success")
            .user(target.id)
            .actor(caller.id)
            .ip(m.ip)
            .detail("fields", changes.field_names());
        let deactivated = status.is_some_and(|s| s != UserStatus::Active);
        let password_changed = changes.password_hash.is_some();
        let written =
            a.db.call(db_queue::UpdateUser {
                id: target.id,
                keep_an_admin: removes_an_admin(&target, status, role),
                changes,
                guard,
                expect,
                audit,
            })
            .await?;
        let user = match written {
            Written::Applied(user) => user,
            Written::NotFound => return Err(NOT_FOUND),
            Written::Changed => continue,
        };
        let version = password_changed.then_some(user.credential_version);
        if deactivated {
            revoke_all(&a, user.id, EndReason::Suspended, None, version).await?;
        } else if password_changed {
            let keep = is_self.then(|| principal.session_id.clone());
            revoke_all(&a, user.id, EndReason::PasswordChanged, keep, version).await?;
        }
        return Ok(user);
    }
    Err(ActorError::Conflict)
}

/// An update's password work, done once however often its decision is taken again: the new
/// password's hash, and the stored hash the current password was last checked against.
#[derive(Default)]
struct PasswordWork {
    new_hash: Option<String>,
    checked_against: Option<String>,
}

impl PasswordWork {
    /// The hash to write when the update sets a password. One's own password needs the current
    /// one (checked against the hash the change then expects to replace); an administrator
    /// resetting another's does not.
    async fn new_hash(
        &mut self,
        a: &Accounts,
        asked: &AccountChanges,
        target: &User,
        is_self: bool,
        ip: ClientIp,
        expect: &mut Expect,
    ) -> Result<Option<String>, ActorError> {
        let Some(password) = &asked.password else {
            return Ok(None);
        };
        if is_self {
            let current = asked.current_password.clone().ok_or_else(|| {
                ActorError::Invalid("current_password is required to change the password".into())
            })?;
            if self.checked_against.as_deref() != Some(target.password_hash.as_str()) {
                check_current_password(a, target, current, ip).await?;
                self.checked_against = Some(target.password_hash.clone());
            }
            expect.credential_version = Some(target.credential_version);
        }
        if self.new_hash.is_none() {
            let hash = a.hasher.call(HashPassword::new(password.clone())).await?;
            self.new_hash = Some(hash);
        }
        Ok(self.new_hash.clone())
    }
}

/// The current password of a change is a password check like a login's (SPEC 10): under the
/// same rate limit and the same lockout of the account's email key from this address, counted
/// before it is checked, audited when wrong or refused. Wrong: 403; at a limit: 429, the right
/// password included.
async fn check_current_password(
    a: &Accounts,
    user: &User,
    current: Password,
    ip: ClientIp,
) -> Result<(), ActorError> {
    let failure = |outcome| {
        AuditEntry::new("user.password_check", outcome)
            .user(user.id)
            .actor(user.id)
            .email(&user.email)
            .ip(ip)
    };
    a.sessions.call(TakeRateToken(ip)).await?;
    let begun = a
        .sessions
        .call(BeginLoginAttempt {
            email: EmailKey::of(&user.email),
            source: AttemptSource::Address(ip),
        })
        .await;
    let attempt = match begun {
        Ok(attempt) => attempt,
        Err(e @ ActorError::LockedOut(_)) => {
            a.audit(failure("locked_out")).await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let hash = user.password_hash.clone();
    match a.hasher.call(VerifyPassword::new(current, hash)).await {
        Ok(true) => {
            end_attempt(a, attempt, AttemptOutcome::Succeeded).await;
            Ok(())
        }
        Ok(false) => {
            let failures = end_attempt(a, attempt, AttemptOutcome::Failed).await;
            let entry = failure("failure")
                .detail("reason", "bad_password")
                .detail("failures_in_window", failures as i64);
            a.audit(entry).await?;
            Err(ActorError::Forbidden(Refusal::WrongCurrentPassword))
        }
        Err(e) => {
            end_attempt(a, attempt, AttemptOutcome::Abandoned).await;
            Err(e)
        }
    }
}

pub(super) async fn revoke_all(
    a: &Accounts,
    user_id: UserId,
    reason: EndReason,
    keep: Option<crate::domain::SessionId>,
    credential_version: Option<i64>,
) -> Result<usize, ActorError> {
    a.tokens
        .call(RevokeUserSessions {
            user_id,
            reason,
            keep,
            credential_version,
        })
        .await
}

pub(super) async fn delete(a: Arc<Accounts>, m: DeleteAccount) -> Result<(), ActorError> {
    let principal = a.tokens.call(ValidateAccess(m.token)).await?;
    for _ in 0..WRITE_ATTEMPTS {
        let caller = a.account(&principal).await?;
        may_act_on(&caller, &m.target)?;
        let target = target(&a, &caller, m.target).await?;
        let guard = if caller.id == target.id {
            Guard::Owner
        } else {
            Guard::Admin(caller.id)
        };
        let audit = AuditEntry::new("user.delete", "success")
            .user(target.id)
            .actor(caller.id)
            .ip(m.ip)
            .detail("wallet", "closed");
        let written =
            a.db.call(db_queue::DeleteUser {
                id: target.id,
                guard,
                // Decided on the account as read: if its status or role changed since, decide
                // again (a user promoted meanwhile may be the last administrator).
                expect: Expect {
                    status: Some(target.status),
                    role: Some(target.role),
                    credential_version: None,
                },
                keep_an_admin: removes_an_admin(&target, Some(UserStatus::Inactive), None),
                audit,
            })
            .await?;
        match written {
            Written::Applied(()) => {
                revoke_all(&a, target.id, EndReason::Deleted, None, None).await?;
                return Ok(());
            }
            Written::NotFound => return Err(NOT_FOUND),
            Written::Changed => continue,
        }
    }
    Err(ActorError::Conflict)
}

/// A search is answered in one turn of the database queue when the store's indexes bound its
/// work by its matches and page (`SearchIndexed`: the embedded store's trigram index), or begun
/// from them (MongoDB's key indexes: the key's holders, a range of slots at a time); else it
/// runs as slices of every user ([`newest_in_slices`]). Then the page's users are read by id; a
/// user deleted meanwhile is left out of the page.
pub(super) async fn search(a: Arc<Accounts>, m: SearchAccounts) -> Result<Page<User>, ActorError> {
    a.admin(m.token).await?;
    let q = m.query;
    let filter = db_queue::UserFilter::from(&q);
    let limit = usize::try_from(q.limit.max(0)).unwrap_or(0);
    let skip = usize::try_from(q.skip).unwrap_or(usize::MAX);
    let keep = skip.saturating_add(limit);
    let indexed =
        a.db.call(db_queue::SearchIndexed {
            filter: filter.clone(),
            keep,
            sort_at_most: a.settings.search_slice.saturating_mul(20),
            examine: a.settings.search_slice,
        })
        .await?;
    let found = match indexed {
        Some(db_queue::Indexed::Found(found)) => found,
        Some(db_queue::Indexed::Begun(first)) => newest_in_slices(&a, filter, keep, first).await?,
        None => newest_in_slices(&a, filter, keep, Vec::new()).await?,
    };
    let total = found.total;
    let page: Vec<UserId> = found
        .newest
        .into_iter()
        .skip(skip)
        .map(|(_, id)| id)
        .collect();
    let mut found = a.db.call(db_queue::FindUsersByIds(page.clone())).await?;
    let users = page
        .iter()
        .filter_map(|id| {
            let at = found.iter().position(|u| u.id == *id)?;
            Some(found.swap_remove(at))
        })
        .collect();
    Ok(Page {
        items: users,
        total,
    })
}

/// The newest `keep` matches' sort keys (newest first) and how many match: the slices `first`
/// (read already, in order), then from where the last of them stopped (or from the start),
/// slices (`SearchUsersSlice`) each its own turn in the database queue, so a scan of a large
/// collection never holds the queue: what is queued behind a slice waits for that slice only.
/// Not a snapshot: a write landing between slices may or may not be seen.
async fn newest_in_slices(
    a: &Accounts,
    filter: db_queue::UserFilter,
    keep: usize,
    first: Vec<db_queue::SearchSlice>,
) -> Result<db_queue::IndexedSearch, ActorError> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashSet};

    // The newest `keep` matches so far, the oldest of them on top.
    let mut newest = BinaryHeap::new();
    let (mut total, mut after) = (0u64, None);
    // Users met in a slice whose users may be met again (see `SearchSlice::may_recur`).
    let mut met = HashSet::new();
    let mut first = first.into_iter().peekable();
    loop {
        let mut slice = match first.next() {
            Some(slice) => slice,
            None => {
                a.db.call(db_queue::SearchUsersSlice {
                    filter: filter.clone(),
                    after: after.take(),
                    examine: a.settings.search_slice,
                })
                .await?
            }
        };
        if slice.may_recur {
            met.extend(slice.matches.iter().map(|(_, id)| *id));
        } else if !met.is_empty() {
            slice.matches.retain(|(_, id)| !met.contains(id));
        }
        total += slice.matches.len() as u64;
        for key in slice.matches {
            newest.push(Reverse(key));
            if newest.len() > keep {
                newest.pop();
            }
        }
        after = slice.next;
        if after.is_none() && first.peek().is_none() {
            break;
        }
    }
    // Newest first: ascending `Reverse` order.
    let newest = newest
        .into_sorted_vec()
        .into_iter()
        .map(|Reverse(key)| key)
        .collect();
    Ok(db_queue::IndexedSearch { newest, total })
}

pub(super) async fn read_audit(
    a: Arc<Accounts>,
    m: ReadAudit,
) -> Result<Page<AuditRecord>, ActorError> {
    a.admin(m.token).await?;
    a.db.call(m.query).await
}

pub(super) async fn require_admin(a: Arc<Accounts>, m: RequireAdmin) -> Result<User, ActorError> {
    a.admin(m.token).await
}
