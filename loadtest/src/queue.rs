//! The `queue` subcommand: what the DbQueueActor costs. The same user look-ups (find by email)
//! with the same concurrency, once through the actor's FIFO mailbox and once with the mongodb
//! driver called directly, against the same server in the same run.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Supervisor;
use actors::db_queue::{self, DbQueue, DbQueueActor, FindUserByEmail, RegisterUser};
use actors::domain::{AuditEntry, Email, NewUser, Role, UserStatus, Username};
use actors::mailbox::{ActorStats, Mailbox};
use actors::probe::Dependency;
use clap::Args;
use mongodb::bson::{doc, Document};

#[derive(Args)]
pub struct QueueArgs {
    /// Connection string naming a scratch database (it is filled with `users` users).
    #[arg(long)]
    mongodb_uri: String,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds per measurement (each side is measured twice, interleaved).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 200)]
    users: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(args: QueueArgs) -> Result<(), String> {
    actix::System::new().block_on(run_async(args))
}

async fn run_async(args: QueueArgs) -> Result<(), String> {
    let store = db_queue::connect(&args.mongodb_uri, None, None, Duration::from_secs(5)).await?;
    let stats = ActorStats::new("db_queue", 100_000);
    let database = Dependency::new("mongodb");
    let actor = {
        let (store, stats, database) = (store.clone(), stats.clone(), database.clone());
        Supervisor::start(move |_| {
            DbQueueActor::new(
                db_queue::Store::Mongo(store),
                stats,
                Duration::from_secs(10),
                database,
                Duration::from_secs(3600),
                actors::db_queue::UserCache::new(Duration::ZERO, 0),
            )
        })
    };
    let queue = DbQueue::new(
        Mailbox::new(actor, stats, Duration::from_secs(30)),
        Duration::from_secs(10),
        database,
    );
    queue.prepare().await.map_err(|e| e.to_string())?;
    let emails = seed(&queue, args.users).await?;

    let client = mongodb::Client::with_uri_str(&args.mongodb_uri)
        .await
        .map_err(|e| e.to_string())?;
    let users = client
        .default_database()
        .ok_or("the connection string must name a database")?
        .collection::<Document>("users");

    let duration = Duration::from_secs_f64(args.duration);
    let mut queued = 0.0;
    let mut direct = 0.0;
    for _ in 0..2 {
        let q = queue.clone();
        queued += measure(args.concurrency, duration, &emails, move |email| {
            let queue = q.clone();
            async move {
                queue
                    .call(FindUserByEmail(email))
                    .await
                    .map(|u| u.is_some())
                    .unwrap_or(false)
            }
        })
        .await;
        let u = users.clone();
        direct += measure(args.concurrency, duration, &emails, move |email| {
            let users = u.clone();
            async move {
                // As the service looks a user up: through the case-insensitive email index.
                users
                    .find_one(doc! {"email": email.as_str()})
                    .collation(db_queue::case_insensitive())
                    .await
                    .map(|u| u.is_some())
                    .unwrap_or(false)
            }
        })
        .await;
    }
    let (queued, direct) = (queued / 2.0, direct / 2.0);
    let ratio = queued / direct;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"queued_per_sec": queued, "direct_per_sec": direct, "queue_ratio": ratio,
                               "concurrency": args.concurrency})
        );
    } else {
        println!(
            "look-ups/s at concurrency {}: through the DbQueueActor {queued:.0}, driver directly {direct:.0}, queue_ratio {ratio:.3}",
            args.concurrency
        );
    }
    Ok(())
}

async fn seed(queue: &DbQueue, count: usize) -> Result<Vec<Email>, String> {
    let mut emails = Vec::with_capacity(count);
    for i in 0..count {
        let email = Email::parse(&format!("q-{i}@queue.bench"))?;
        let created = queue
            .call(RegisterUser {
                user: NewUser {
                    email: email.clone(),
                    username: Username::parse(&format!("q_{i}"))?,
                    password_hash: "$2b$04$benchmarkbenchmarkbenchuGq5hX3c2m4e3bZq8zQmWkD2L0Uy"
                        .into(),
                    role: Role::User,
                    status: UserStatus::Active,
                },
                initial_balance: 0,
                guard: actors::db_queue::Guard::Nobody,
                audit: AuditEntry::new("bench.seed", "success"),
            })
            .await;
        match created {
            Ok(_) | Err(actors::ActorError::Duplicate(_)) => emails.push(email),
            Err(e) => return Err(format!("seeding: {e}")),
        }
    }
    Ok(emails)
}

/// Look-ups per second with `concurrency` tasks for `duration`.
async fn measure<F, Fut>(concurrency: usize, duration: Duration, emails: &[Email], lookup: F) -> f64
where
    F: Fn(Email) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = bool> + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (lookup, done, emails) = (lookup.clone(), Arc::clone(&done), emails.to_vec());
            actix::spawn(async move {
                let mut i = t;
                while started.elapsed() < duration {
                    if lookup(emails[i % emails.len()].clone()).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += concurrency;
                }
            })
        })
        .collect();
    futures::future::join_all(tasks).await;
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
