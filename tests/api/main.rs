//! The black-box suite: the service started on a random port against a real MongoDB
//! wire-protocol server and a real Redis, driven over HTTP. Each test has its own database and
//! Redis key prefix, so tests run in parallel. `scripts/test.sh` starts the servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alerts;
mod backends;
mod bad_input;
mod cli;
mod compat;
mod cross_instance;
mod docs;
mod edge;
mod error_codes;
mod faults;
mod group_commit;
mod health;
mod helpers;
mod identity;
mod invariants;
mod key_rotation;
mod login;
mod ops_page;
mod register;
mod resilience;
mod search;
mod session_api;
mod sessions;
mod supervision;
mod telemetry;
mod tokens;
mod users;
mod verify;
