//! `loadtest`: a load generator for the CS user-management service, plus the baselines the
//! benchmark compares against.
//!
//! - `run`: closed-loop load (or paced, with `--rate`) on one scenario: `register`, `login`
//!   (pre-seeded users, cycling), `me` (GET /auth/me with live tokens), `refresh`, `mixed`, or a
//!   plain `get` of any path. Prints successes/s (2xx only), every status, p50 to p99.9 latency and a
//!   progress line each second; exits 3 when fewer than `--min-success` % succeeded.
//! - `bcrypt`: bare bcrypt verifies/s on all cores (the physical ceiling for logins/s).
//! - `baseline`: a bare actix-web handler returning a small JSON body (the ceiling for GETs).
//! - `queue`: user look-ups/s through the DbQueueActor versus the mongodb driver directly.
//! - `delay-proxy`: a TCP proxy adding a fixed delay each way (a database one hop away).
#![deny(clippy::unwrap_used)]

mod proxy;
mod queue;
mod scenarios;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a deployment with one scenario and report throughput, latency and statuses.
    Run(scenarios::RunArgs),
    /// Bare bcrypt verifies per second on `threads` threads (default: all cores).
    Bcrypt {
        #[arg(long, default_value_t = 10)]
        cost: u32,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Verify this many hashes per call, as the service's hashing pool does when logins
        /// queue up (`bcrypt::verify_many`); 1 = one at a time, 0 = the batch kernel's width.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Serve a bare actix-web JSON handler on 127.0.0.1:PORT (for the me_ratio baseline).
    Baseline {
        #[arg(long)]
        port: u16,
        /// Worker threads (0 = actix-web's default).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// Look-ups/s through the DbQueueActor and through the driver directly, same server.
    Queue(queue::QueueArgs),
    /// A TCP proxy on 127.0.0.1:LISTEN to UPSTREAM that delays each direction by DELAY_MS.
    DelayProxy(proxy::ProxyArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => match scenarios::run(args) {
            // Fewer successes than --min-success: the report said why.
            Ok(false) => return std::process::ExitCode::from(3),
            other => other.map(|_| ()),
        },
        Command::Bcrypt {
            cost,
            duration,
            threads,
            batch,
            json,
        } => bcrypt_bench(
            cost,
            Duration::from_secs_f64(duration),
            threads,
            batch,
            json,
        ),
        Command::Baseline { port, workers } => baseline(port, workers),
        Command::Queue(args) => queue::run(args),
        Command::DelayProxy(args) => proxy::run(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bcrypt_bench(
    cost: u32,
    duration: Duration,
    threads: usize,
    batch: usize,
    json: bool,
) -> Result<(), String> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    };
    // The batch kernel (its one-time choice is made here, before the clock starts).
    let kernel = bcrypt::detected_backend();
    let batch = if batch == 0 { kernel.lanes() } else { batch };
    let hash = bcrypt::hash("benchmark-password", cost).map_err(|e| e.to_string())?;
    // A batch of logins is of different users: each hash its own salt.
    let batch_hashes = (0..batch)
        .map(|_| bcrypt::hash("benchmark-password", cost))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (hash, batch_hashes) = (hash.clone(), batch_hashes.clone());
            std::thread::spawn(move || {
                let passwords: Vec<&[u8]> = vec![&b"benchmark-password"[..]; batch];
                let hashes: Vec<&str> = batch_hashes.iter().map(String::as_str).collect();
                let mut n = 0_u64;
                while started.elapsed() < duration {
                    let verified = if batch == 1 {
                        u64::from(bcrypt::verify("benchmark-password", &hash).unwrap_or(false))
                    } else {
                        let verdicts = bcrypt::verify_many(&passwords, &hashes);
                        verdicts.iter().filter(|v| matches!(v, Ok(true))).count() as u64
                    };
                    // Count only verifies completed inside the window.
                    if started.elapsed() <= duration {
                        n += verified;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let per_sec = total as f64 / duration.as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({"cost": cost, "threads": threads, "batch": batch,
                "kernel": kernel.name(), "lanes": kernel.lanes(),
                "verifies": total, "per_sec": per_sec})
        );
    } else {
        println!(
            "bcrypt cost {cost} on {threads} threads, {batch} per call ({} kernel, {} lanes): \
             {total} verifies, {per_sec:.1}/s",
            kernel.name(),
            kernel.lanes()
        );
    }
    Ok(())
}

fn baseline(port: u16, workers: usize) -> Result<(), String> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(|| {
            App::new().default_service(web::to(|| async {
                HttpResponse::Ok().json(serde_json::json!({"success": true, "data": {"ok": 1}}))
            }))
        });
        if workers > 0 {
            server = server.workers(workers);
        }
        server
            .bind(("127.0.0.1", port))
            .map_err(|e| e.to_string())?
            .run()
            .await
            .map_err(|e| e.to_string())
    })
}
