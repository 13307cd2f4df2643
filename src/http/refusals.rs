//! Log lines for refused requests (no or wrong token, too large, unknown path or method),
//! bounded: anyone can send those, as fast as they like, and one line each would let them
//! fill the disk. A few lines a second are written; the rest are counted, and the count is
//! written with the next line that goes through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines per window.
const LINES_PER_WINDOW: u32 = 5;
const WINDOW: Duration = Duration::from_secs(1);

pub struct RefusalLog {
    state: Mutex<Window>,
}

struct Window {
    started: Instant,
    logged: u32,
    /// Refusals not logged since the last line that was.
    suppressed: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            state: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }
}

impl RefusalLog {
    /// `Some(n)` when this refusal may be logged, `n` being how many before it were not;
    /// `None` when it is to be counted only.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().expect("never poisoned");
        if now.duration_since(w.started) >= WINDOW {
            w.started = now;
            w.logged = 0;
        }
        if w.logged < LINES_PER_WINDOW {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

/// The request's path for a log line: never its query (which may hold a token), at most
/// 100 characters of it.
pub fn loggable_path(path: &str) -> String {
    let mut p: String = path.chars().take(100).collect();
    if p.len() < path.len() {
        p.push('…');
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_a_few_lines_a_second_with_what_was_left_out() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let admitted: Vec<_> = (0..1000).filter_map(|_| log.admit_at(t0)).collect();
        assert_eq!(admitted, vec![0; LINES_PER_WINDOW as usize]);
        // The next window's first line carries the count of the previous one's rest.
        assert_eq!(
            log.admit_at(t0 + WINDOW),
            Some(1000 - LINES_PER_WINDOW as u64)
        );
        assert_eq!(log.admit_at(t0 + WINDOW), Some(0));
    }

    #[test]
    fn paths_are_cut_and_queries_never_kept() {
        assert_eq!(loggable_path("/x"), "/x");
        let long = "/".repeat(300);
        assert_eq!(loggable_path(&long).chars().count(), 101);
    }
}
