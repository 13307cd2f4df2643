//! Several hosts in `DATABASE_URL`, in libpq's form
//! (`postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write`): connect to the one
//! that takes writes, and move when it stops taking them (a failover promoted another).
//!
//! sqlx connects to one host. Every pool of a database URL is registered here; when a write
//! finds the database unreachable or read-only, the hosts are asked in order which one is
//! writable, the pools are pointed at it (`set_connect_options`), and connections opened
//! before the move are dropped instead of being handed out again. With one host, the same
//! drops connections to a node that turned read-only, so that new ones find it when it is
//! writable again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgPool, Row};

/// The least time between two rounds of asking the hosts.
const ASK_EVERY: Duration = Duration::from_secs(1);

pub struct Failover {
    targets: Vec<PgConnectOptions>,
    names: Vec<String>,
    current: AtomicUsize,
    /// Connections opened before this instant are not handed out again.
    moved_at: Mutex<Instant>,
    /// Every pool of the URL, with what it changes in a host's options.
    pools: Mutex<Vec<(PgPool, Adapt)>>,
    asking: AtomicBool,
    asked_at: Mutex<Option<Instant>>,
    timeout: Duration,
}

/// The hosts of a URL: `h1:5432,h2` in the authority part, each with its own port (5432
/// when none), and what libpq's `target_session_attrs` asks (only `read-write` and `any`
/// are known; the hosts are always tried for a writable one first).
pub fn split_hosts(url: &str) -> Result<Vec<String>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("DATABASE_URL must start with postgres:// or postgresql://")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let tail = without_param(tail, "target_session_attrs")?;
    let hosts: Vec<&str> = hosts.split(',').collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err("DATABASE_URL lists an empty host (h1:5432,h2:5432 is the form)".into());
    }
    Ok(hosts
        .into_iter()
        .map(|h| format!("{scheme}://{userinfo}{h}{tail}"))
        .collect())
}

/// `tail` (path and query) without the parameter `name`, checked.
fn without_param(tail: &str, name: &str) -> Result<String, String> {
    let Some((path, query)) = tail.split_once('?') else {
        return Ok(tail.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if k == name => {
                if !matches!(v, "read-write" | "any" | "primary") {
                    return Err(format!(
                        "DATABASE_URL's {name} must be read-write (or any), not {v:?}"
                    ));
                }
            }
            _ => kept.push(pair),
        }
    }
    Ok(if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    })
}

/// What a pool changes in the options of whichever host it connects to.
pub type Adapt = fn(PgConnectOptions) -> PgConnectOptions;

impl Failover {
    /// The failover of `url`, made once per URL (every pool of the process shares it).
    pub fn for_url(
        url: &str,
        timeout: Duration,
        options: impl Fn(&str) -> Result<PgConnectOptions, String>,
    ) -> Result<Arc<Failover>, String> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Failover>>>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Default::default)
            .lock()
            .expect("never poisoned");
        if let Some(f) = all.get(url) {
            return Ok(f.clone());
        }
        let urls = split_hosts(url)?;
        let targets = urls
            .iter()
            .map(|u| options(u))
            .collect::<Result<Vec<_>, _>>()?;
        let names = (targets.iter())
            .map(|o| format!("{}:{}", o.get_host(), o.get_port()))
            .collect();
        let failover = Arc::new(Failover {
            targets,
            names,
            current: AtomicUsize::new(0),
            moved_at: Mutex::new(Instant::now()),
            pools: Mutex::new(Vec::new()),
            asking: AtomicBool::new(false),
            asked_at: Mutex::new(None),
            timeout,
        });
        all.insert(url.to_owned(), failover.clone());
        Ok(failover)
    }

    /// Whether the URL names several hosts.
    pub fn is_multi_host(&self) -> bool {
        self.targets.len() > 1
    }

    /// The options of the host used now.
    pub fn options(&self) -> PgConnectOptions {
        self.targets[self.current.load(Ordering::Acquire)].clone()
    }

    /// Points `pool` at the host used now, and at the next one when it moves, its options
    /// changed by `adapt` each time.
    pub fn register(&self, pool: &PgPool, adapt: Adapt) {
        pool.set_connect_options(adapt(self.options()));
        self.pools
            .lock()
            .expect("never poisoned")
            .push((pool.clone(), adapt));
    }

    /// Whether a connection `age` old may be handed out again: not when it was opened
    /// before the last move (to another host, or away from a node that turned read-only).
    pub fn keeps(&self, age: Duration) -> bool {
        age < self.moved_at.lock().expect("never poisoned").elapsed()
    }

    /// A write found the database unreachable or read-only: connections open now are not
    /// handed out again, and the hosts are asked (at most every second) which one takes
    /// writes.
    pub fn suspect(self: &Arc<Self>) {
        *self.moved_at.lock().expect("never poisoned") = Instant::now();
        {
            let mut asked = self.asked_at.lock().expect("never poisoned");
            if asked.is_some_and(|at| at.elapsed() < ASK_EVERY) {
                return;
            }
            *asked = Some(Instant::now());
        }
        if !self.is_multi_host() || self.asking.swap(true, Ordering::AcqRel) {
            return;
        }
        // Until a host takes writes: a write that finds none may never come back to say so
        // (its caller's timeout drops it first), and the promotion may come later.
        let this = self.clone();
        tokio::spawn(async move {
            while this.find_writable().await.is_none() {
                tokio::time::sleep(ASK_EVERY).await;
            }
            this.asking.store(false, Ordering::Release);
        });
    }

    /// Asks each host, in the URL's order, whether it takes writes; moves to the first that
    /// does. Returns its index, or `None` when none does now.
    pub async fn find_writable(&self) -> Option<usize> {
        for (i, target) in self.targets.iter().enumerate() {
            match tokio::time::timeout(self.timeout, writable(target)).await {
                Ok(Ok(true)) => {
                    let before = self.current.swap(i, Ordering::AcqRel);
                    if before != i {
                        tracing::warn!(
                            from = %self.names[before],
                            to = %self.names[i],
                            "database: moving to the host that takes writes"
                        );
                        *self.moved_at.lock().expect("never poisoned") = Instant::now();
                        for (pool, adapt) in self.pools.lock().expect("never poisoned").iter() {
                            pool.set_connect_options(adapt(target.clone()));
                        }
                    }
                    return Some(i);
                }
                Ok(Ok(false)) => {
                    tracing::debug!(host = %self.names[i], "database: this host is read-only")
                }
                Ok(Err(e)) => {
                    tracing::debug!(host = %self.names[i], error = %e, "database: this host does not answer")
                }
                Err(_) => {
                    tracing::debug!(host = %self.names[i], "database: this host does not answer in time")
                }
            }
        }
        None
    }
}

/// Whether the host takes writes (libpq's `read-write`: not in recovery, and
/// `transaction_read_only` off for a new session).
async fn writable(target: &PgConnectOptions) -> Result<bool, sqlx::Error> {
    let mut conn = target.connect().await?;
    // A plain statement (no argument), which needs no transaction behind a pooler.
    let row = (conn
        .fetch_one("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"))
    .await?;
    let (recovery, read_only): (bool, String) = (row.try_get(0)?, row.try_get(1)?);
    let _ = conn.close().await;
    Ok(!recovery && read_only == "off")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_split_and_the_libpq_parameter_removed() {
        assert_eq!(
            split_hosts(
                "postgres://u:p@h1:5432,h2:6432/db?target_session_attrs=read-write&sslmode=disable"
            )
            .unwrap(),
            [
                "postgres://u:p@h1:5432/db?sslmode=disable",
                "postgres://u:p@h2:6432/db?sslmode=disable"
            ]
        );
        assert_eq!(
            split_hosts("postgresql://h/db").unwrap(),
            ["postgresql://h/db"]
        );
        assert_eq!(
            split_hosts("postgres://u@h1,h2?target_session_attrs=any").unwrap(),
            ["postgres://u@h1", "postgres://u@h2"]
        );
        assert!(split_hosts("postgres://u@h1,,h2/db").is_err());
        let e = split_hosts("postgres://h1,h2/db?target_session_attrs=standby").unwrap_err();
        assert!(e.starts_with("DATABASE_URL"), "{e}");
    }
}
