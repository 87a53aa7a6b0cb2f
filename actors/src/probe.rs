//! Dependency watchers: each actor that owns a connection pings its backend on a timer, off its
//! mailbox, and publishes up/down here. `/health` reads these flags at once, so a long queue never
//! makes a healthy database look down, and an outage shows within one probe interval.
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::PublicReason;
use crate::ActorError;

/// The last known state of one backend.
#[derive(Debug)]
pub struct Dependency {
    pub name: &'static str,
    up: AtomicBool,
    /// Failed probes in a row.
    failures: AtomicU32,
    checked: AtomicBool,
    watching: AtomicBool,
    /// Why the last probe failed, when its cause may be shown (a [`PublicReason`]).
    reason: Mutex<Option<&'static str>>,
    /// False while the database answers but what it needs before any work (its indexes) is not
    /// in place yet: it was unreachable at start, and the service prepares it when it answers.
    prepared: AtomicBool,
}

impl Dependency {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            up: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            checked: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            reason: Mutex::new(None),
            prepared: AtomicBool::new(true),
        })
    }

    /// Whether what work needs is in place (see the field); true unless set otherwise.
    pub fn is_prepared(&self) -> bool {
        self.prepared.load(Ordering::Relaxed)
    }

    pub fn set_prepared(&self, prepared: bool) {
        self.prepared.store(prepared, Ordering::Relaxed);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Down for at least two probes in a row: work needing it is refused at once rather than
    /// left to time out (one slow probe under load is not enough to refuse anything).
    pub fn confirmed_down(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= 2
    }

    /// Why the last probe failed, when the cause may be shown to anyone.
    pub fn reason(&self) -> Option<&'static str> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the first probe has finished.
    pub fn is_checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    fn set(&self, result: &Result<(), ActorError>) {
        let up = result.is_ok();
        let reason = match result {
            Err(ActorError::Unavailable { source, .. }) => {
                source.downcast_ref::<PublicReason>().map(|r| r.0)
            }
            _ => None,
        };
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        metrics::gauge!("csum_dependency_up", "dependency" => self.name)
            .set(f64::from(u8::from(up)));
        self.checked.store(true, Ordering::Relaxed);
        if up {
            self.failures.store(0, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let was = self.up.swap(up, Ordering::Relaxed);
        match result {
            Err(e) if was || !self.is_checked() => {
                tracing::warn!(dependency = self.name, error = %e, "dependency down")
            }
            Ok(()) if !was => tracing::info!(dependency = self.name, "dependency up"),
            _ => {}
        }
    }

    /// Pings now and then every `interval` on the current arbiter, for as long as the actor
    /// system runs. Starting it again (an actor restart) is a no-op.
    pub fn watch<F, Fut>(self: &Arc<Self>, interval: Duration, ping: F)
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = Result<(), ActorError>> + 'static,
    {
        if self.watching.swap(true, Ordering::Relaxed) {
            return;
        }
        let dependency = Arc::clone(self);
        let deadline = interval.max(Duration::from_millis(500));
        actix::spawn(async move {
            loop {
                let result = tokio::time::timeout(deadline, ping())
                    .await
                    .unwrap_or(Err(ActorError::Timeout(dependency.name)));
                dependency.set(&result);
                tokio::time::sleep(interval).await;
            }
        });
    }
}
