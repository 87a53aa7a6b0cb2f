//! The database's contract, through the DbQueueActor: each case runs on every store this run
//! has (embedded always, MongoDB when `TEST_MONGODB_URI` is set), on real servers, with the same
//! expectations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use actors::db_queue::{
    DbQueue, DeleteUser, Expect, FindUserByEmail, FindUserById, FindUsersByIds, Guard, Indexed,
    ListAudit, RegisterUser, SearchIndexed, SearchUsersSlice, UpdateUser, UserFilter, Written,
};
use actors::domain::{
    AuditEntry, Email, NewUser, Page, Role, User, UserChanges, UserId, UserStatus, Username,
};
use actors::error::DuplicateField;
use actors::ActorError;
use common::StoreBackend;

fn new_user(email: &str, username: &str) -> NewUser {
    NewUser {
        email: Email::parse(email).expect("a valid test email"),
        username: Username::parse(username).expect("a valid test username"),
        password_hash: "$2b$04$not.a.real.hash.but.stored.as.given.........".into(),
        role: Role::User,
        status: UserStatus::Active,
    }
}

async fn register_as(db: &DbQueue, user: NewUser) -> Result<Written<User>, ActorError> {
    db.call(RegisterUser {
        user,
        initial_balance: 100,
        guard: Guard::Nobody,
        audit: AuditEntry::new("user.register", "success"),
    })
    .await
    .map(|written| written.map(|created| created.user))
}

/// Registers a user that must be stored.
async fn register(db: &DbQueue, email: &str, username: &str) -> User {
    match register_as(db, new_user(email, username)).await {
        Ok(Written::Applied(user)) => user,
        other => panic!("{email} is registered: {other:?}"),
    }
}

async fn find_by_email(db: &DbQueue, email: &str) -> Option<User> {
    let email = Email::parse(email).expect("a valid test email");
    db.call(FindUserByEmail(email)).await.unwrap()
}

async fn a_registered_user_is_found_by_email_in_any_spelling(backend: &StoreBackend) {
    // Arrange
    let db = backend.start().await;

    // Act
    let user = register(&db, "ada@example.com", "ada").await;

    // Assert
    let found = find_by_email(&db, "ADA@Example.com").await.expect("found");
    assert_eq!((found.id, found.username.as_str()), (user.id, "ada"));
    let by_id = db.call(FindUserById(user.id)).await.unwrap();
    assert_eq!(by_id.map(|u| u.email), Some("ada@example.com".to_string()));
    assert!(find_by_email(&db, "nobody@example.com").await.is_none());
}

async fn a_taken_email_or_username_is_refused_as_a_duplicate(backend: &StoreBackend) {
    // Arrange
    let db = backend.start().await;
    register(&db, "grace@example.com", "grace").await;

    // Act
    let same_email = register_as(&db, new_user("Grace@Example.com", "other")).await;
    let same_name = register_as(&db, new_user("other@example.com", "GRACE")).await;

    // Assert
    assert!(
        matches!(
            same_email,
            Err(ActorError::Duplicate(DuplicateField::Email))
        ),
        "{same_email:?}"
    );
    assert!(
        matches!(
            same_name,
            Err(ActorError::Duplicate(DuplicateField::Username))
        ),
        "{same_name:?}"
    );
    assert!(find_by_email(&db, "other@example.com").await.is_none());
}

fn rename(user: &User, to: &str, credential_version: i64) -> UpdateUser {
    UpdateUser {
        id: user.id,
        changes: UserChanges {
            username: Some(Username::parse(to).expect("a valid test username")),
            ..UserChanges::default()
        },
        guard: Guard::Owner,
        expect: Expect {
            credential_version: Some(credential_version),
            ..Expect::default()
        },
        keep_an_admin: false,
        audit: AuditEntry::new("user.update", "success").user(user.id.to_hex()),
    }
}

async fn an_update_expecting_a_stale_credential_version_changes_nothing(backend: &StoreBackend) {
    // Arrange: the password changes, raising the credential version.
    let db = backend.start().await;
    let user = register(&db, "linus@example.com", "linus").await;
    let new_password = UpdateUser {
        changes: UserChanges {
            password_hash: Some("$2b$04$another.hash.stored.as.given..............".into()),
            ..UserChanges::default()
        },
        ..rename(&user, "linus", user.credential_version)
    };
    let changed = db.call(new_password).await.unwrap();
    let Written::Applied(changed) = changed else {
        panic!("the password changes: {changed:?}");
    };
    assert!(changed.credential_version > user.credential_version);

    // Act
    let stale = db
        .call(rename(&user, "tux", user.credential_version))
        .await
        .unwrap();
    let current = db
        .call(rename(&user, "penguin", changed.credential_version))
        .await
        .unwrap();

    // Assert
    assert!(matches!(stale, Written::Changed), "{stale:?}");
    assert!(matches!(current, Written::Applied(_)), "{current:?}");
    let stored = db.call(FindUserById(user.id)).await.unwrap().unwrap();
    assert_eq!(stored.username, "penguin");
}

fn delete(user: &User) -> DeleteUser {
    DeleteUser {
        id: user.id,
        guard: Guard::Owner,
        expect: Expect::default(),
        keep_an_admin: false,
        audit: AuditEntry::new("user.delete", "success").user(user.id.to_hex()),
    }
}

async fn a_deleted_user_is_gone_and_its_audit_entries_stay(backend: &StoreBackend) {
    // Arrange
    let db = backend.start().await;
    let user = register(&db, "alan@example.com", "alan").await;

    // Act
    let deleted = db.call(delete(&user)).await.unwrap();
    let again = db.call(delete(&user)).await.unwrap();

    // Assert
    assert!(matches!(deleted, Written::Applied(())), "{deleted:?}");
    assert!(matches!(again, Written::NotFound), "{again:?}");
    assert!(find_by_email(&db, "alan@example.com").await.is_none());
    let Page {
        items: entries,
        total,
    } = db
        .call(ListAudit {
            user_id: Some(user.id.to_hex()),
            action: None,
            limit: 10,
            skip: 0,
        })
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(total, 2, "{actions:?}");
    assert_eq!(actions, ["user.delete", "user.register"], "newest first");
}

/// The newest `keep` matches of `filter` and how many match: from the store's index when it
/// has one for this filter (whole, or begun there), else read as slices (as the account search
/// does).
async fn newest_matches(db: &DbQueue, filter: UserFilter, keep: usize) -> (Vec<UserId>, u64) {
    let indexed = db
        .call(SearchIndexed {
            filter: filter.clone(),
            keep,
            sort_at_most: 1_000,
            examine: 100,
        })
        .await
        .unwrap();
    let first = match indexed {
        Some(Indexed::Found(found)) => {
            return (
                found.newest.into_iter().map(|(_, id)| id).collect(),
                found.total,
            )
        }
        Some(Indexed::Begun(first)) => first,
        None => Vec::new(),
    };
    let (mut matches, mut after) = (Vec::new(), None);
    let mut first = first.into_iter().peekable();
    loop {
        let slice = match first.next() {
            Some(slice) => slice,
            None => db
                .call(SearchUsersSlice {
                    filter: filter.clone(),
                    after: after.take(),
                    examine: 100,
                })
                .await
                .unwrap(),
        };
        matches.extend(slice.matches);
        after = slice.next;
        if after.is_none() && first.peek().is_none() {
            break;
        }
    }
    matches.sort_by(|a, b| b.cmp(a));
    let total = matches.len() as u64;
    (
        matches.into_iter().take(keep).map(|(_, id)| id).collect(),
        total,
    )
}

async fn a_search_answers_a_page_of_the_newest_matches_and_their_total(backend: &StoreBackend) {
    // Arrange: three users named alike, registered apart in time, and one other.
    let db = backend.start().await;
    let mut alike = Vec::new();
    for n in 0..3 {
        alike.push(register(&db, &format!("m{n}@example.com"), &format!("marie_{n}")).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    register(&db, "pierre@example.com", "pierre").await;
    let filter = UserFilter {
        username: Some("marie".into()),
        ..UserFilter::default()
    };

    // Act
    let (page, total) = newest_matches(&db, filter, 2).await;
    let users = db.call(FindUsersByIds(page.clone())).await.unwrap();

    // Assert
    assert_eq!(total, 3);
    assert_eq!(
        page,
        [alike[2].id, alike[1].id],
        "the newest two, newest first"
    );
    assert_eq!(users.len(), 2);
}

on_every_backend!(
    StoreBackend:
    a_registered_user_is_found_by_email_in_any_spelling,
    a_taken_email_or_username_is_refused_as_a_duplicate,
    an_update_expecting_a_stale_credential_version_changes_nothing,
    a_deleted_user_is_gone_and_its_audit_entries_stay,
    a_search_answers_a_page_of_the_newest_matches_and_their_total,
);
