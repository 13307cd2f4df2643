//! The connections batches are written on. sqlx pings a connection each time it goes back to
//! its pool (a round trip that wakes the backend once more per batch), and hands out idle
//! connections oldest first, so consecutive batches went to different backends, each with
//! colder caches. Batches take the connection that wrote last instead (figures in
//! bench/HISTORY.md); one is kept only after it wrote without an error, and never so that
//! the pool has none left for the others (`/readyz`, retention).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a connection may wait here before it goes back to the pool (whose own idle
/// timeout then applies).
pub(super) const KEPT_IDLE_MAX: Duration = Duration::from_secs(60);

/// How long a connection is reused before it goes back to the pool, which then closes it if
/// it is past the pool's own `max_lifetime` (sqlx checks that only on return).
const KEPT_LIFETIME_MAX: Duration = Duration::from_secs(30 * 60);

/// Connections that have just written a batch, the latest last.
pub(super) struct Kept<C> {
    idle: Mutex<Vec<KeptConnection<C>>>,
}

struct KeptConnection<C> {
    conn: C,
    /// When it was kept.
    at: Instant,
    /// When it was taken from the pool.
    since: Instant,
}

impl<C> Default for Kept<C> {
    fn default() -> Self {
        Kept {
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl<C> Kept<C> {
    /// The connection kept last, with when it was taken from the pool.
    pub fn take(&self) -> Option<(C, Instant)> {
        self.sweep();
        let kept = self.idle.lock().expect("never poisoned").pop();
        kept.map(|k| (k.conn, k.since))
    }

    /// Keeps a connection that has just written, for the next batch, unless it has served
    /// long enough, or keeping it would leave the pool none for the others
    /// (`others_served` false: a pool of one keeps none). Else it is dropped: back to the pool.
    pub fn keep(&self, conn: C, since: Instant, others_served: bool) {
        if others_served && since.elapsed() < KEPT_LIFETIME_MAX {
            let kept = KeptConnection {
                conn,
                at: Instant::now(),
                since,
            };
            self.idle.lock().expect("never poisoned").push(kept);
        }
    }

    /// Gives the connections kept for more than [`KEPT_IDLE_MAX`] back to the pool.
    pub fn sweep(&self) {
        let stale: Vec<KeptConnection<C>> = {
            let mut idle = self.idle.lock().expect("never poisoned");
            let old = (idle.iter())
                .take_while(|k| k.at.elapsed() > KEPT_IDLE_MAX)
                .count();
            idle.drain(..old).collect()
        };
        drop(stale); // outside the lock: each goes back to the pool
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_batch_takes_the_connection_kept_last() {
        let kept = Kept::default();
        let (t1, t2) = (Instant::now(), Instant::now());
        kept.keep("a", t1, true);
        kept.keep("b", t2, true);
        assert_eq!(kept.take(), Some(("b", t2)));
        assert_eq!(kept.take(), Some(("a", t1)));
        assert_eq!(kept.take(), None);
    }

    #[test]
    fn none_is_kept_when_the_others_would_have_none_or_it_served_long_enough() {
        let kept = Kept::default();
        kept.keep("a", Instant::now(), false);
        assert_eq!(kept.len(), 0);
        let long_ago = Instant::now().checked_sub(KEPT_LIFETIME_MAX + Duration::from_secs(1));
        if let Some(long_ago) = long_ago {
            kept.keep("b", long_ago, true);
            assert_eq!(kept.len(), 0);
        }
    }

    #[test]
    fn connections_kept_but_unused_go_back() {
        let kept = Kept::default();
        kept.keep("old", Instant::now(), true);
        kept.keep("recent", Instant::now(), true);
        let stale = Instant::now().checked_sub(KEPT_IDLE_MAX + Duration::from_secs(1));
        kept.idle.lock().unwrap()[0].at = stale.expect("the clock is past a minute");
        kept.sweep();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept.take().map(|(c, _)| c), Some("recent"));
    }
}
