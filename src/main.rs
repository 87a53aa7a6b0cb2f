//! The service binary: telemetry, configuration, then one of the commands (default `serve`).
use std::io::BufRead;
use std::process::ExitCode;

use actors::domain::{Email, Password, Username};
use clap::{Parser, Subcommand};
use cs_user_management::configuration::{BootstrapAdmin, Settings};
use cs_user_management::startup::{bootstrap_admin, plan_migration, Actors, Application};
use cs_user_management::telemetry;

/// mimalloc: the service allocates many small, short-lived objects per request (headers, JSON,
/// futures); glibc's malloc showed as ~12 % of CPU under load. Built with `no_thp`: with
/// transparent huge pages its arenas grow in 2 MiB steps (peak RSS 59 MiB instead of 35 under
/// the same `/auth/me` load, same throughput).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The CS user-management service: registration, login, JWT sessions, user administration.
/// Configuration comes from config/default.toml, config/<APP_ENV>.toml and the environment.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Print the resolved configuration (secrets masked); exit 2 if it is invalid.
    CheckConfig,
    /// Bring the database's indexes to what the service needs and exit (`serve` does it too);
    /// indexes another program made on the same keys are adopted.
    Migrate {
        /// Print what would change (and what stops it), changing nothing; exit 1 if something
        /// stops it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Exit 0 when the service on this host's configured PORT answers /health/live (for a
    /// container HEALTHCHECK without curl).
    Healthcheck,
    /// Create an administrator. The password is read from ADMIN_PASSWORD or the first line of
    /// standard input, never from the command line.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: String,
    },
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = telemetry::init();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::CheckConfig => check_config(&settings),
        Command::Migrate { dry_run } => migrate(&settings, dry_run).await,
        Command::Healthcheck => healthcheck(&settings),
        Command::CreateAdmin { email, username } => {
            create_admin(&settings, &email, &username).await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

async fn serve(settings: Settings) -> Result<(), String> {
    let app = Application::build(settings)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(port = app.port(), "listening");
    app.run_until_stopped()
        .await
        .map_err(|e| format!("server error: {e}"))
}

fn check_config(settings: &Settings) -> Result<(), String> {
    use std::io::Write;
    let json = serde_json::to_string_pretty(settings).map_err(|e| e.to_string())?;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{json}");
    Ok(())
}

fn healthcheck(settings: &Settings) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;
    let addr = SocketAddr::from(([127, 0, 0, 1], settings.server.port));
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    stream
        .write_all(b"GET /health/live HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    if head.ends_with(b" 200") {
        Ok(())
    } else {
        Err(format!("unhealthy: {}", String::from_utf8_lossy(&head)))
    }
}

async fn migrate(settings: &Settings, dry_run: bool) -> Result<(), String> {
    if dry_run {
        let (database, plan) = plan_migration(settings).await.map_err(|e| e.to_string())?;
        println!("database {database} (read only: nothing is changed):");
        for step in &plan.steps {
            println!("would {step}");
        }
        if plan.steps.is_empty() {
            println!("nothing to change");
        }
        for conflict in &plan.conflicts {
            println!("cannot proceed: {conflict}");
        }
        if !plan.conflicts.is_empty() {
            return Err(
                "the data must change first (see the lines above); nothing was changed".into(),
            );
        }
        return Ok(());
    }
    let actors = Actors::start(settings).await.map_err(|e| e.to_string())?;
    let indexed = actors
        .db
        .backfill_search_index(settings.actors.search_slice.max(1))
        .await
        .map_err(|e| e.to_string())?;
    if indexed > 0 {
        println!("{indexed} users added to the search index");
    }
    println!("indexes are in place in database {}", actors.database_name);
    Ok(())
}

async fn create_admin(settings: &Settings, email: &str, username: &str) -> Result<(), String> {
    let password = match std::env::var("ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password from standard input: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let admin = BootstrapAdmin {
        email: Email::parse(email).map_err(|e| format!("--email: {e}"))?,
        username: Username::parse(username).map_err(|e| format!("--username: {e}"))?,
        password: Password::parse(&password).map_err(|e| format!("password: {e}"))?,
    };
    let actors = Actors::start(settings).await.map_err(|e| e.to_string())?;
    let created = bootstrap_admin(
        &actors.db,
        &actors.hasher,
        admin,
        settings.wallet.initial_balance,
    )
    .await
    .map_err(|e| e.to_string())?;
    if created {
        println!("administrator {email} created");
        Ok(())
    } else {
        Err(format!(
            "a user with email {email} or username {username} already exists"
        ))
    }
}
