//! One way to try again: an exponential back-off schedule and the loop that follows it.
//! Every retry of the service (a conflict with a concurrent writer, a database that does not
//! answer yet, a spool waiting to be drained) goes through [`retry`].

use std::future::Future;
use std::time::Duration;

/// While the database does not answer (migrations waiting for it, the spool waiting to be
/// drained): a first retry soon, then every few seconds at most.
pub const WAIT_FOR_DATABASE: Backoff =
    Backoff::forever(Duration::from_millis(250), Duration::from_secs(5));

/// Delays that double from `first` up to `max`, for `attempts` retries (`None`: for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub attempts: Option<u32>,
}

impl Backoff {
    /// Retries for ever, waiting `first`, then twice as long each time, at most `max`.
    pub const fn forever(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            attempts: None,
        }
    }

    /// At most `attempts` retries.
    pub const fn times(first: Duration, max: Duration, attempts: u32) -> Backoff {
        Backoff {
            first,
            max,
            attempts: Some(attempts),
        }
    }

    /// The waits before each retry, in order.
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        let unbounded = std::iter::successors(Some(self.first), move |d| {
            Some(d.saturating_mul(2).min(self.max))
        });
        unbounded.take(self.attempts.map_or(usize::MAX, |n| n as usize))
    }
}

/// Runs `attempt` until it succeeds, its error is not worth retrying (`retryable` says
/// no), or the schedule ends; `on_retry` hears each error retried and the wait before the
/// next try. Returns the last result.
pub async fn retry<T, E, Fut>(
    schedule: Backoff,
    mut attempt: impl FnMut() -> Fut,
    retryable: impl Fn(&E) -> bool,
    on_retry: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let attempt = |()| {
        let fut = attempt();
        async move { ((), fut.await) }
    };
    retry_with(schedule, (), attempt, retryable, on_retry)
        .await
        .1
}

/// [`retry`] for an attempt that needs something mutable (a connection): `state` is moved
/// into each attempt and handed back with its result, then returned with the last one.
pub async fn retry_with<S, T, E, Fut>(
    schedule: Backoff,
    mut state: S,
    mut attempt: impl FnMut(S) -> Fut,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, Duration),
) -> (S, Result<T, E>)
where
    Fut: Future<Output = (S, Result<T, E>)>,
{
    let mut delays = schedule.delays();
    loop {
        let (back, result) = attempt(state).await;
        state = back;
        match result {
            Err(e) if retryable(&e) => match delays.next() {
                Some(wait) => {
                    on_retry(&e, wait);
                    tokio::time::sleep(wait).await;
                }
                None => return (state, Err(e)),
            },
            done => return (state, done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_and_stop_after_the_attempts() {
        let d: Vec<_> = Backoff::times(4 * MS, 20 * MS, 5).delays().collect();
        assert_eq!(d, [4 * MS, 8 * MS, 16 * MS, 20 * MS, 20 * MS]);
        let mut forever = Backoff::forever(250 * MS, 5000 * MS).delays();
        assert_eq!(forever.nth(100), Some(5000 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_is_retryable_then_gives_the_last_error() {
        let mut calls = 0;
        let mut waits = Vec::new();
        let result: Result<(), &str> = retry(
            Backoff::times(MS, 10 * MS, 2),
            || {
                calls += 1;
                async { Err("busy") }
            },
            |e| *e == "busy",
            |_, wait| waits.push(wait),
        )
        .await;
        assert_eq!((result, calls), (Err("busy"), 3));
        assert_eq!(waits, [MS, 2 * MS]);

        let mut calls = 0;
        let result: Result<(), &str> = retry(
            Backoff::forever(MS, MS),
            || {
                calls += 1;
                async { Err("broken") }
            },
            |e| *e == "busy",
            |_, _| {},
        )
        .await;
        assert_eq!((result, calls), (Err("broken"), 1), "not retryable: once");

        let mut calls = 0;
        let result: Result<u32, &str> = retry(
            Backoff::forever(MS, MS),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 4 {
                        Err("busy")
                    } else {
                        Ok(n)
                    }
                }
            },
            |e| *e == "busy",
            |_, _| {},
        )
        .await;
        assert_eq!(result, Ok(4));
    }
}
