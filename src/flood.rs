//! Floods of one error bounded in the log: a cause is written at most once a [`FLOOD_WINDOW`],
//! with the count of its lines held back since the one before.
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often one cause is logged: its first line is written, then at most one a second, and
/// each line says how many of that cause were held back since the one before (`held_back`).
/// So a dependency down under load writes a line a second, not one per failed request.
const FLOOD_WINDOW: Duration = Duration::from_secs(1);

/// Causes tracked at once; beyond it, the quiet ones are forgotten (at most once a window), and
/// a new cause that still finds no room is gated with every other such cause, as one.
const FLOOD_CAUSES: usize = 1024;

/// How much of a cause keys its gate: causes differing only past it share one.
const FLOOD_KEY_LEN: usize = 256;

/// Whether a line of `cause` is written now: `Some(lines held back since the last one)`, or
/// `None` (held back, and counted). What a flood that stops held back in its last second is
/// never written: its count waits for the cause's next line.
pub fn flood_gate(cause: &str) -> Option<u64> {
    struct Gates {
        by_cause: HashMap<String, (Instant, u64)>,
        swept: Option<Instant>,
    }
    static GATES: OnceLock<Mutex<Gates>> = OnceLock::new();
    let mut gates = GATES
        .get_or_init(|| {
            Mutex::new(Gates {
                by_cause: HashMap::new(),
                swept: None,
            })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let mut end = cause.len().min(FLOOD_KEY_LEN);
    while !cause.is_char_boundary(end) {
        end -= 1;
    }
    let mut key = &cause[..end];
    if !gates.by_cause.contains_key(key) && gates.by_cause.len() >= FLOOD_CAUSES {
        let due = gates
            .swept
            .is_none_or(|at| now.duration_since(at) >= FLOOD_WINDOW);
        if due {
            gates
                .by_cause
                .retain(|_, (last, _)| now.duration_since(*last) < FLOOD_WINDOW);
            gates.swept = Some(now);
        }
        if gates.by_cause.len() >= FLOOD_CAUSES {
            key = "(other causes)";
        }
    }
    match gates.by_cause.get_mut(key) {
        Some((last, held_back)) if now.duration_since(*last) < FLOOD_WINDOW => {
            *held_back += 1;
            None
        }
        Some((last, held_back)) => {
            *last = now;
            Some(std::mem::take(held_back))
        }
        None => {
            gates.by_cause.insert(key.to_string(), (now, 0));
            Some(0)
        }
    }
}
