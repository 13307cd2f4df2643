//! Settings from flags and environment variables (a flag wins), validated once at start.
//! Every error is one line that names the setting, so that a misconfigured container says
//! what to fix in its first log line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ingest::BatchSettings;
use crate::store::DbSettings;

#[derive(Debug, Parser)]
#[command(
    name = "callhippo-ingest",
    version,
    about = "Receives CallHippo webhooks and writes every event into normalized PostgreSQL tables."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// PostgreSQL URL, postgres://user:password@host:5432/database.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", global = true, default_value = "text")]
    pub log_format: String,

    /// Log filter, e.g. info or callhippo_ingest=debug,info.
    #[arg(long = "log", env = "RUST_LOG", global = true, default_value = "info")]
    pub log_filter: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Apply pending migrations and exit.
    Migrate,
    /// Re-derive calls, sms, call_status, tags and call_tags from raw_events.
    Replay(ReplayArgs),
    /// Exit 0 when the local serve answers /readyz with 200 (for container healthchecks).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: String,

    /// Shared secret a webhook POST must carry (?token=… or Authorization: Bearer …).
    #[arg(long, env = "WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<String>,

    /// Largest accepted body, in bytes; larger ones get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value = "262144")]
    pub max_body_bytes: String,

    /// Where events wait while the database is unreachable.
    #[arg(long, env = "SPOOL_DIR", default_value = "spool")]
    pub spool_dir: PathBuf,

    /// The most the spool may hold, in bytes; past it the answer is 503.
    #[arg(long, env = "SPOOL_MAX_BYTES", default_value = "1073741824")]
    pub spool_max_bytes: String,

    /// Remove raw_events rows last received more than this many days ago (unset: keep forever).
    #[arg(long, env = "RAW_RETENTION_DAYS")]
    pub raw_retention_days: Option<String>,

    /// Database connections in the pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value = "8")]
    pub db_pool_size: String,

    /// Longest wait for a database connection or statement, in milliseconds (migrations: for
    /// another session's lock).
    #[arg(long, env = "DB_TIMEOUT_MS", default_value = "3000")]
    pub db_timeout_ms: String,

    /// Most events written in one transaction.
    #[arg(long, env = "BATCH_MAX", default_value = "256")]
    pub batch_max: String,

    /// Most transactions in flight at once (a second starts beside the first only when 64
    /// events wait).
    #[arg(long, env = "WRITERS", default_value = "3")]
    pub writers: String,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Only events last received at or after this time (2025-06-01 or 2025-06-01T12:00:00Z).
    #[arg(long)]
    pub since: Option<String>,

    /// Only events stored as this kind: call, sms, call_status, test, unknown or invalid.
    #[arg(long)]
    pub kind: Option<String>,

    /// Events per transaction.
    #[arg(long, default_value = "500")]
    pub batch: String,
}

impl ReplayArgs {
    pub fn filter(&self) -> Result<crate::replay::Filter, SettingError> {
        let since = match self.since.as_deref() {
            None => None,
            Some(raw) => {
                let with_time = if raw.trim().len() == 10 {
                    format!("{}T00:00:00Z", raw.trim())
                } else {
                    raw.to_owned()
                };
                Some(crate::payload::fields::parse_time(&with_time).map_err(|_| {
                    SettingError(format!("--since must be a date or time such as 2025-06-01 or 2025-06-01T12:00:00Z, not {raw:?}"))
                })?)
            }
        };
        let kind = match self.kind.as_deref() {
            None => None,
            Some(raw) => Some(crate::event::Kind::parse(raw.trim()).ok_or_else(|| {
                SettingError(format!(
                    "--kind must be one of call, sms, call_status, test, unknown, invalid, not {raw:?}"
                ))
            })?),
        };
        Ok(crate::replay::Filter { since, kind })
    }

    pub fn batch(&self) -> Result<usize, SettingError> {
        positive("--batch", &self.batch, 100_000).map(|n| n as usize)
    }
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The serve address to ask; 0.0.0.0 means this machine.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: String,

    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value = "3000")]
    pub timeout_ms: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub db: DbSettings,
    pub listen_addr: SocketAddr,
    pub webhook_token: Option<String>,
    pub max_body_bytes: usize,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub raw_retention_days: Option<u32>,
    pub batch: BatchSettings,
}

impl ServeSettings {
    /// Defaults for everything but the database, as the documentation lists them.
    pub fn new(database_url: &str) -> Self {
        ServeSettings {
            db: DbSettings {
                url: database_url.to_owned(),
                pool_size: 8,
                timeout: Duration::from_secs(3),
            },
            listen_addr: "0.0.0.0:8080".parse().expect("a valid address"),
            webhook_token: None,
            max_body_bytes: 262_144,
            spool_dir: PathBuf::from("spool"),
            spool_max_bytes: 1 << 30,
            raw_retention_days: None,
            batch: BatchSettings::default(),
        }
    }
}

/// A setting that is missing or wrong; its `Display` is the one line printed at start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingError(pub String);

impl Cli {
    pub fn log_format(&self) -> Result<LogFormat, SettingError> {
        match self.log_format.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(SettingError(format!(
                "LOG_FORMAT must be text or json, not {other:?}"
            ))),
        }
    }

    pub fn database_url(&self) -> Result<String, SettingError> {
        let url = self
            .database_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                SettingError(
                    "DATABASE_URL is not set: give --database-url or the DATABASE_URL \
                     environment variable (postgres://user:password@host:5432/database)"
                        .into(),
                )
            })?;
        crate::store::connect_options(url, Duration::from_secs(5)).map_err(SettingError)?;
        Ok(url.to_owned())
    }

    pub fn db_settings(&self) -> Result<DbSettings, SettingError> {
        Ok(DbSettings {
            url: self.database_url()?,
            pool_size: 4,
            timeout: Duration::from_secs(30),
        })
    }
}

impl ServeArgs {
    pub fn settings(&self, database_url: String) -> Result<ServeSettings, SettingError> {
        let listen_addr = self.listen_addr.trim().parse().map_err(|_| {
            SettingError(format!(
                "LISTEN_ADDR must be an address and port such as 0.0.0.0:8080, not {:?}",
                self.listen_addr
            ))
        })?;
        let webhook_token = match self.webhook_token.as_deref() {
            None => None,
            Some(t) if t.trim().is_empty() => {
                return Err(SettingError(
                    "WEBHOOK_TOKEN is set but empty: unset it to leave the endpoint open, or give a secret".into(),
                ))
            }
            Some(t) => Some(t.to_owned()),
        };
        let mut s = ServeSettings::new(&database_url);
        s.listen_addr = listen_addr;
        s.webhook_token = webhook_token;
        s.max_body_bytes = positive("MAX_BODY_BYTES", &self.max_body_bytes, 64 << 20)? as usize;
        s.spool_dir = self.spool_dir.clone();
        s.spool_max_bytes = positive("SPOOL_MAX_BYTES", &self.spool_max_bytes, u64::MAX)?;
        s.raw_retention_days = match self.raw_retention_days.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(positive("RAW_RETENTION_DAYS", raw, 100_000)? as u32),
        };
        s.db.pool_size = positive("DB_POOL_SIZE", &self.db_pool_size, 1000)? as u32;
        s.db.timeout =
            Duration::from_millis(positive("DB_TIMEOUT_MS", &self.db_timeout_ms, 3_600_000)?);
        s.batch.batch_max = positive("BATCH_MAX", &self.batch_max, 10_000)? as usize;
        s.batch.workers = positive("WRITERS", &self.writers, 64)? as usize;
        Ok(s)
    }
}

/// A whole number from 1 to `max`.
fn positive(name: &str, raw: &str, max: u64) -> Result<u64, SettingError> {
    match raw.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(SettingError(format!(
            "{name} must be a whole number from 1 to {max}, not {raw:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("callhippo-ingest").chain(args.iter().copied()))
            .unwrap()
    }

    fn serve_args(cli: &Cli) -> &ServeArgs {
        match &cli.command {
            Command::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let cli = parse(&["serve", "--database-url", "postgres://u@h/db"]);
        let s = serve_args(&cli)
            .settings(cli.database_url().unwrap())
            .unwrap();
        assert_eq!(s.max_body_bytes, 262_144);
        assert_eq!(s.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.webhook_token, None);
        assert_eq!(cli.log_format().unwrap(), LogFormat::Text);
    }

    #[test]
    fn bad_settings_name_themselves() {
        let cli = parse(&[
            "serve",
            "--max-body-bytes",
            "lots",
            "--database-url",
            "postgres://u@h/db",
        ]);
        let e = serve_args(&cli)
            .settings("postgres://u@h/db".into())
            .unwrap_err();
        assert!(e.0.starts_with("MAX_BODY_BYTES"), "{e}");
        let cli = parse(&["serve", "--listen-addr", "nowhere"]);
        let e = serve_args(&cli)
            .settings("postgres://u@h/db".into())
            .unwrap_err();
        assert!(e.0.starts_with("LISTEN_ADDR"), "{e}");
        let cli = parse(&["serve", "--webhook-token", " "]);
        let e = serve_args(&cli)
            .settings("postgres://u@h/db".into())
            .unwrap_err();
        assert!(e.0.starts_with("WEBHOOK_TOKEN"), "{e}");
        let cli = parse(&["migrate", "--log-format", "xml"]);
        assert!(cli.log_format().unwrap_err().0.starts_with("LOG_FORMAT"));
        let cli = parse(&["migrate", "--database-url", "mysql://x"]);
        let e = cli.database_url().unwrap_err();
        assert!(e.0.starts_with("DATABASE_URL"), "{e}");
        assert!(!e.0.contains('\n'), "one line: {e}");
    }
}
