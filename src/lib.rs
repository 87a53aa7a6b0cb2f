//! The HTTP side of the CS user-management service.
//!
//! - [`configuration`]: the settings tree and its layering.
//! - [`startup`]: starts each actor once and builds the actix-web `App`.
//! - [`routes`]: one module per resource; handlers validate, send messages, await replies.
//! - [`extractors`]: the authenticated caller, checked by the TokenActor.
//! - [`error`]: the one HTTP error type.
#![deny(clippy::unwrap_used)]

pub mod configuration;
pub mod error;
pub mod extractors;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod telemetry;
