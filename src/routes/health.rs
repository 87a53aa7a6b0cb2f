//! `/health`, `/health/live`, `/health/ready`: the seed's `details.database_queue` block, one
//! block per actor, and the state of each dependency.
use std::collections::BTreeMap;
use std::time::Duration;

use crate::flood::flood_gate;
use crate::routes::responses::{DatabaseQueue, HealthDetails, HealthResponse, StatusResponse};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use actors::mailbox::ActorSnapshot;
use actors::probe::Dependency;

/// An actor that restarted this recently makes the service `degraded`.
const RECENT_RESTART: Duration = Duration::from_secs(60);

/// One look at the dependencies (through the actors' own mailboxes) and the actors' figures.
pub struct Probe {
    /// The database (`mongodb` or `sqlite`) and the token store (`redis` or `sqlite_sessions`).
    pub dependencies: [(&'static str, Result<(), String>); 2],
    /// Why a dependency is down, when the cause may be shown (see [`Dependency::reason`]).
    pub why: BTreeMap<&'static str, &'static str>,
    pub actors: BTreeMap<&'static str, ActorSnapshot>,
}

impl Probe {
    /// Reads the probe flags the actors keep current; never waits on a dependency or a queue.
    pub async fn run(state: &AppState) -> Self {
        let flag = |d: &Dependency| {
            let state = match (d.is_up(), d.reason()) {
                (true, _) if !d.is_prepared() => Err(format!(
                    "{}: answering; its indexes are being prepared",
                    d.name
                )),
                (true, _) => Ok(()),
                (false, Some(why)) => Err(format!("{}: {why}", d.name)),
                (false, None) => Err(format!("{} did not answer its last probe", d.name)),
            };
            (d.name, state)
        };
        let why = [&state.database, &state.token_store]
            .into_iter()
            .filter(|d| !d.is_up())
            .filter_map(|d| Some((d.name, d.reason()?)))
            .collect();
        Self {
            dependencies: [flag(&state.database), flag(&state.token_store)],
            why,
            actors: state.actor_snapshots(),
        }
    }

    /// The backends in use, by name.
    pub fn names(&self) -> Vec<&'static str> {
        self.dependencies.iter().map(|(name, _)| *name).collect()
    }

    /// `up` or `down` for each backend.
    pub fn checks(&self) -> BTreeMap<&'static str, &'static str> {
        self.dependencies
            .iter()
            .map(|(name, r)| (*name, state_of(r)))
            .collect()
    }

    fn dependencies_up(&self) -> bool {
        self.dependencies.iter().all(|(_, r)| r.is_ok())
    }

    fn any_mailbox_full(&self) -> bool {
        self.actors
            .values()
            .any(|a| a.mailbox_len + a.in_flight >= a.mailbox_capacity)
    }
}

fn state_of(r: &Result<(), String>) -> &'static str {
    // The cause goes to the log; the endpoint says only up or down (it is public).
    match r {
        Ok(()) => "up",
        Err(_) => "down",
    }
}

/// Overall state, dependencies and every actor's mailbox figures.
#[utoipa::path(get, path = "/health", operation_id = "getHealth", tag = "operations",
    responses(
        (status = 200, description = "healthy or degraded", body = HealthResponse),
        (status = 503, description = "unhealthy", body = HealthResponse),
    ))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let probe = Probe::run(&state).await;
    for (name, r) in &probe.dependencies {
        if let Err(cause) = r {
            if let Some(held_back) = flood_gate(&format!("health probe failed: {name}: {cause}")) {
                tracing::warn!(dependency = name, %cause, held_back, "health probe failed");
            }
        }
    }
    let all_alive = probe.actors.values().all(|a| a.alive);
    let busy = probe
        .actors
        .values()
        .any(|a| (a.mailbox_len + a.in_flight) * 10 > a.mailbox_capacity * 8);
    let restarted = state.restarted_within(RECENT_RESTART);
    let status = if !probe.dependencies_up() || !all_alive {
        "unhealthy"
    } else if busy || restarted {
        "degraded"
    } else {
        "healthy"
    };
    let body = HealthResponse {
        status,
        service: "cs-user-management",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started_at.elapsed().as_secs(),
        dependencies: probe.names(),
        checks: probe.checks(),
        why: probe.why.clone(),
        details: HealthDetails {
            database_queue: DatabaseQueue::from_snapshot(probe.actors.get("db_queue")),
            search_memory_users: state.db.search_memory_users(),
            actors: probe.actors,
        },
    };
    if status == "unhealthy" {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/health/live", operation_id = "getLiveness", tag = "operations",
    responses((status = 200, description = "alive", body = StatusResponse)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(StatusResponse {
        status: "alive",
        checks: BTreeMap::new(),
    })
}

/// 503 while a dependency is unreachable or a mailbox is full.
#[utoipa::path(get, path = "/health/ready", operation_id = "getReadiness", tag = "operations",
    responses(
        (status = 200, description = "ready", body = StatusResponse),
        (status = 503, description = "not ready", body = StatusResponse),
    ))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let probe = Probe::run(&state).await;
    let full = probe.any_mailbox_full();
    let ready = probe.dependencies_up() && !full;
    let body = StatusResponse {
        status: if ready { "ready" } else { "not_ready" },
        checks: {
            let mut checks = probe.checks();
            checks.insert("mailboxes", if full { "full" } else { "ok" });
            checks
        },
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

/// The live operations page: plain HTML and a small script, no build step, no CDN. It polls
/// `/health` and draws each actor's mailbox length and p99 over the last minutes.
#[utoipa::path(get, path = "/ops", operation_id = "getOpsPage", tag = "operations",
    responses((status = 200, description = "The operations page", body = String,
        content_type = "text/html")))]
pub async fn ops_page() -> HttpResponse {
    ops_asset(
        "text/html; charset=utf-8",
        include_str!("../../static/ops.html"),
    )
}

/// The page's script and style, served from here so the page runs under a
/// `Content-Security-Policy` of `default-src 'self'` (no inline script or style).
pub async fn ops_script() -> HttpResponse {
    ops_asset(
        "text/javascript; charset=utf-8",
        include_str!("../../static/ops.js"),
    )
}

pub async fn ops_style() -> HttpResponse {
    ops_asset(
        "text/css; charset=utf-8",
        include_str!("../../static/ops.css"),
    )
}

fn ops_asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Security-Policy", "default-src 'self'"))
        .insert_header(("X-Frame-Options", "DENY"))
        .body(body)
}
