//! The HTTP side of the CS user-management service.
//!
//! - [`configuration`]: the settings tree and its layering.
//! - [`startup`]: starts each actor once (an AccountActor per HTTP worker) and builds the
//!   actix-web `App`.
//! - [`state`]: what every handler shares (the actors' mailboxes, the settings).
//! - [`routes`]: one module per resource (and the OpenAPI document made from them); a handler
//!   parses its input, sends one message to the AccountActor and maps the reply.
//! - [`extractors`]: the bearer token as presented, the client's address, the AccountActor.
//! - [`error`]: the one HTTP error type; [`flood`]: its log lines bounded under a flood.
//! - [`introspection`]: the services allowed to introspect tokens, and their rates.
//! - [`metrics`]: Prometheus figures; [`telemetry`]: the log, request ids, spans over OTLP.
//! - [`wire`]: the connection wrapper that gives actix-http's own error answers a JSON body.
#![deny(clippy::unwrap_used)]

pub mod configuration;
pub mod error;
pub mod extractors;
pub mod flood;
pub mod introspection;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod wire;
