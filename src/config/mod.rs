//! Settings from flags and environment variables (a flag wins), validated once at start.
//! Every error is one line that names the setting, so that a misconfigured container says
//! what to fix in its first log line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};

use crate::erasure::Identifier;
use crate::ingest::BatchSettings;
use crate::store::rollup::ReportSettings;
use crate::store::DbSettings;

pub mod defaults;

use defaults::max;

/// A whole number from 1 to `max`, for the setting `name`; the error is ours, in one line.
fn whole(name: &'static str, max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |raw| match raw.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} must be a whole number from 1 to {max}, not {raw:?}"
        )),
    }
}

/// An IP address and port, for the setting `name`.
fn address(name: &'static str) -> impl Fn(&str) -> Result<SocketAddr, String> + Clone {
    move |raw| {
        raw.trim().parse().map_err(|_| {
            format!("{name} must be an address and port such as 0.0.0.0:8080, not {raw:?}")
        })
    }
}

/// Days to keep, or `None`: the empty value, which keeps forever like an unset one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionDays(pub Option<u64>);

fn days_or_forever(name: &'static str) -> impl Fn(&str) -> Result<RetentionDays, String> + Clone {
    move |raw| {
        if raw.trim().is_empty() {
            return Ok(RetentionDays(None));
        }
        whole(name, max::RETENTION_DAYS)(raw).map(|d| RetentionDays(Some(d)))
    }
}

fn log_format(raw: &str) -> Result<LogFormat, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("LOG_FORMAT must be text or json, not {raw:?}")),
    }
}

fn pooler(raw: &str) -> Result<crate::store::Pooler, String> {
    raw.to_ascii_lowercase().parse()
}

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

    /// none, or transaction when DATABASE_URL points at a pooler in transaction mode
    /// (PgBouncer's pool_mode = transaction, Supavisor on port 6543, …).
    #[arg(long, env = "DB_POOLER", global = true, default_value = "none", value_parser = pooler)]
    pub db_pooler: crate::store::Pooler,

    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", global = true, default_value = defaults::LOG_FORMAT, value_parser = log_format)]
    pub log_format: LogFormat,

    /// Log filter, e.g. info or callhippo_ingest=debug,info.
    #[arg(long = "log", env = "RUST_LOG", global = true, default_value = defaults::LOG_FILTER)]
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
    /// Read past call logs from CallHippo's API and fill in what the webhooks missed.
    Backfill(BackfillArgs),
    /// Erase everything about a person or a call, and drop later events about them.
    Forget(ForgetArgs),
    /// Bring the summary tables behind the statistics views up to date, and exit.
    Rollup(ReportArgs),
}

/// What the statistics views' summaries are computed with.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The IANA time zone whose calendar days the statistics views use.
    #[arg(long, env = "REPORT_TIMEZONE", default_value = defaults::REPORT_TIMEZONE,
          value_parser = zone("REPORT_TIMEZONE"))]
    pub report_timezone: chrono_tz::Tz,

    /// An incoming call answered within this many seconds of ringing meets the service level.
    #[arg(long, env = "SERVICE_LEVEL_SECONDS", default_value_t = defaults::SERVICE_LEVEL_SECONDS,
          value_parser = whole("SERVICE_LEVEL_SECONDS", max::SERVICE_LEVEL_SECONDS))]
    pub service_level_seconds: u64,

    /// A missed incoming call is returned when its caller was called back, or called again
    /// and was answered, within this time (30m, 24h, 2d…).
    #[arg(long, env = "CALLBACK_WINDOW", default_value = defaults::CALLBACK_WINDOW,
          value_parser = interval("CALLBACK_WINDOW"))]
    pub callback_window: Duration,
}

impl ReportArgs {
    pub fn settings(&self) -> ReportSettings {
        ReportSettings {
            zone: self.report_timezone,
            service_level_seconds: self.service_level_seconds as u32,
            callback_window: self.callback_window,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ForgetArgs {
    /// A phone number, in any punctuation (+1 (555) 010-2030 = 15550102030). Repeatable.
    #[arg(long = "phone", value_name = "N", value_parser = Identifier::phone)]
    pub phones: Vec<Identifier>,

    /// An e-mail address (an agent's or an admin's), in any case. Repeatable.
    #[arg(long = "email", value_name = "E", value_parser = Identifier::email)]
    pub emails: Vec<Identifier>,

    /// One call, by its callSid, with everything that belongs to it. Repeatable.
    #[arg(long = "call-sid", value_name = "S", value_parser = Identifier::call_sid)]
    pub call_sids: Vec<Identifier>,

    /// Count, per table, what would be removed, and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The spool of a serve on this machine: forget refuses to run while it holds events.
    #[arg(long, env = "SPOOL_DIR", default_value = defaults::SPOOL_DIR)]
    pub spool_dir: PathBuf,
}

impl ForgetArgs {
    /// Every identifier named, each once.
    pub fn identifiers(&self) -> Result<Vec<Identifier>, SettingError> {
        let mut ids: Vec<Identifier> = (self.phones.iter())
            .chain(&self.emails)
            .chain(&self.call_sids)
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Err(SettingError(
                "forget: name at least one --phone, --email or --call-sid".into(),
            ));
        }
        Ok(ids)
    }
}

#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// First day to read, YYYY-MM-DD in the account's time zone (default: 29 days before --to).
    #[arg(long, value_parser = day("--from"))]
    pub from: Option<NaiveDate>,

    /// Last day to read, YYYY-MM-DD in the account's time zone (default: today there).
    #[arg(long, value_parser = day("--to"))]
    pub to: Option<NaiveDate>,

    /// What to read: call (call logs).
    #[arg(long, default_value = "call", value_parser = ["call", "sms"])]
    pub kind: String,

    #[command(flatten)]
    pub api: ApiArgs,
}

/// How to reach CallHippo's API; its `Debug` leaves the token out.
#[derive(Clone, Args)]
pub struct ApiArgs {
    /// The account's API token (CallHippo: Integrations > API), sent as the apiToken header.
    #[arg(long, env = "CALLHIPPO_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Base URL of CallHippo's API.
    #[arg(long, env = "CALLHIPPO_API_URL", default_value = defaults::CALLHIPPO_API_URL)]
    pub api_url: String,

    #[command(flatten)]
    pub account: AccountZone,
}

/// The account's time zone: CallHippo's API gives days and clock times in it, without an
/// offset.
#[derive(Debug, Clone, Copy, Args)]
pub struct AccountZone {
    /// The account's IANA time zone (e.g. America/New_York): the API's days and times are in it.
    #[arg(long = "timezone", env = "CALLHIPPO_TIMEZONE", default_value = defaults::CALLHIPPO_TIMEZONE,
          value_parser = zone("CALLHIPPO_TIMEZONE"))]
    pub zone: chrono_tz::Tz,
}

impl std::fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiArgs")
            .field("api_token", &self.api_token.as_ref().map(|_| "…"))
            .field("api_url", &self.api_url)
            .field("zone", &self.account.zone)
            .finish()
    }
}

impl ApiArgs {
    /// The token, required.
    pub fn token(&self) -> Result<&str, SettingError> {
        (self.api_token.as_deref().map(str::trim))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                SettingError(
                    "CALLHIPPO_API_TOKEN is not set: copy the API token from CallHippo \
                     (Integrations > API) into CALLHIPPO_API_TOKEN"
                        .into(),
                )
            })
    }
}

impl BackfillArgs {
    /// The days to read: as given, else the last 30 days through today in the account's zone.
    pub fn days(&self) -> Result<(NaiveDate, NaiveDate), SettingError> {
        if self.kind == "sms" {
            return Err(SettingError(
                "--kind sms: CallHippo documents no answer for its SMS logs, so this version \
                 does not read them; --kind call reads the call logs"
                    .into(),
            ));
        }
        let today = Utc::now()
            .with_timezone(&self.api.account.zone)
            .date_naive();
        let to = self.to.unwrap_or(today);
        let from = self.from.unwrap_or(to - chrono::Days::new(29));
        if from > to {
            return Err(SettingError(format!("--from {from} is after --to {to}")));
        }
        Ok((from, to))
    }
}

fn day(name: &'static str) -> impl Fn(&str) -> Result<NaiveDate, String> + Clone {
    move |raw| {
        NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
            .map_err(|_| format!("{name} must be a day such as 2026-11-01, not {raw:?}"))
    }
}

fn zone(name: &'static str) -> impl Fn(&str) -> Result<chrono_tz::Tz, String> + Clone {
    move |raw| {
        raw.trim().parse::<chrono_tz::Tz>().map_err(|_| {
            format!("{name} must be an IANA time zone such as America/New_York or UTC, not {raw:?}")
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = defaults::LISTEN_ADDR, value_parser = address("LISTEN_ADDR"))]
    pub listen_addr: SocketAddr,

    /// Serve /metrics on this address and port instead of LISTEN_ADDR's (for example
    /// 127.0.0.1:9090, reachable by the Prometheus scraper only).
    #[arg(long, env = "METRICS_ADDR", value_parser = address("METRICS_ADDR"))]
    pub metrics_addr: Option<SocketAddr>,

    /// Shared secret a webhook POST must carry (?token=… or Authorization: Bearer …).
    #[arg(long, env = "WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<String>,

    /// Secret of the operator console (GET /console); unset: the console is off (404).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest accepted body, in bytes; larger ones get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES,
          value_parser = whole("MAX_BODY_BYTES", max::MAX_BODY_BYTES))]
    pub max_body_bytes: u64,

    /// Most connections open at once; past it, new ones wait to be accepted.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS,
          value_parser = whole("MAX_CONNECTIONS", max::MAX_CONNECTIONS))]
    pub max_connections: u64,

    /// Where events wait while the database is unreachable.
    #[arg(long, env = "SPOOL_DIR", default_value = defaults::SPOOL_DIR)]
    pub spool_dir: PathBuf,

    /// The most the spool may hold, in bytes; past it the answer is 503.
    #[arg(long, env = "SPOOL_MAX_BYTES", default_value_t = defaults::SPOOL_MAX_BYTES,
          value_parser = whole("SPOOL_MAX_BYTES", u64::MAX))]
    pub spool_max_bytes: u64,

    /// Remove raw_events rows last received more than this many days ago (unset or empty:
    /// keep forever).
    #[arg(long, env = "RAW_RETENTION_DAYS", value_parser = days_or_forever("RAW_RETENTION_DAYS"))]
    pub raw_retention_days: Option<RetentionDays>,

    /// Remove calls, SMS and status events (with their raw events) whose time is more than
    /// this many days ago (unset or empty: keep forever).
    #[arg(long, env = "CALL_RETENTION_DAYS", value_parser = days_or_forever("CALL_RETENTION_DAYS"))]
    pub call_retention_days: Option<RetentionDays>,

    /// Database connections in the pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = defaults::DB_POOL_SIZE,
          value_parser = whole("DB_POOL_SIZE", max::DB_POOL_SIZE))]
    pub db_pool_size: u64,

    /// Longest wait for a database connection or statement, in milliseconds (migrations: for
    /// another connection's lock).
    #[arg(long, env = "DB_TIMEOUT_MS", default_value_t = defaults::DB_TIMEOUT_MS,
          value_parser = whole("DB_TIMEOUT_MS", max::DB_TIMEOUT_MS))]
    pub db_timeout_ms: u64,

    /// Most events written in one transaction.
    #[arg(long, env = "BATCH_MAX", default_value_t = defaults::BATCH_MAX as u64,
          value_parser = whole("BATCH_MAX", max::BATCH_MAX))]
    pub batch_max: u64,

    /// Most transactions in flight at once (a second starts beside the first only when 64
    /// events wait).
    #[arg(long, env = "WRITERS", default_value_t = defaults::WRITERS as u64,
          value_parser = whole("WRITERS", max::WRITERS))]
    pub writers: u64,

    /// With CALLHIPPO_API_TOKEN set: how often to reconcile with CallHippo's API (30m, 1h, 1d…).
    #[arg(long, env = "RECONCILE_INTERVAL", default_value = defaults::RECONCILE_INTERVAL,
          value_parser = interval("RECONCILE_INTERVAL"))]
    pub reconcile_interval: Duration,

    /// How many days back each reconciliation reads, today included.
    #[arg(long, env = "RECONCILE_DAYS", default_value_t = defaults::RECONCILE_DAYS,
          value_parser = whole("RECONCILE_DAYS", max::RECONCILE_DAYS))]
    pub reconcile_days: u64,

    #[command(flatten)]
    pub api: ApiArgs,

    #[command(flatten)]
    pub report: ReportArgs,
}

/// A length of time such as `90s`, `30m`, `1h` or `1d`, at least a minute.
fn interval(name: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |raw| {
        let s = raw.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let seconds = match (n.parse::<u64>(), unit.trim()) {
            (Ok(n), "s") => Some(n),
            (Ok(n), "m") => n.checked_mul(60),
            (Ok(n), "h") => n.checked_mul(3600),
            (Ok(n), "d") => n.checked_mul(86_400),
            _ => None,
        };
        match seconds {
            Some(s) if s >= 60 => Ok(Duration::from_secs(s)),
            _ => Err(format!(
                "{name} must be a length of time of at least a minute, such as 30m, 1h or 1d, not {raw:?}"
            )),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Only events last received at or after this time (2025-06-01 or 2025-06-01T12:00:00Z).
    #[arg(long, value_parser = since)]
    pub since: Option<DateTime<Utc>>,

    /// Only events stored as this kind: call, sms, call_status, test, unknown or invalid.
    #[arg(long, value_parser = kind)]
    pub kind: Option<crate::event::Kind>,

    /// Events per transaction.
    #[arg(long, default_value_t = defaults::REPLAY_BATCH, value_parser = whole("--batch", max::REPLAY_BATCH))]
    pub batch: u64,

    // For records read from CallHippo's API.
    #[command(flatten)]
    pub account: AccountZone,
}

fn since(raw: &str) -> Result<DateTime<Utc>, String> {
    let trimmed = raw.trim();
    let with_time = if trimmed.len() == 10 {
        format!("{trimmed}T00:00:00Z")
    } else {
        trimmed.to_owned()
    };
    crate::payload::fields::parse_time(&with_time).map_err(|_| {
        format!(
            "--since must be a date or time such as 2025-06-01 or 2025-06-01T12:00:00Z, not {raw:?}"
        )
    })
}

fn kind(raw: &str) -> Result<crate::event::Kind, String> {
    crate::event::Kind::parse(raw.trim()).ok_or_else(|| {
        format!("--kind must be one of call, sms, call_status, test, unknown, invalid, not {raw:?}")
    })
}

impl ReplayArgs {
    pub fn filter(&self) -> crate::replay::Filter {
        crate::replay::Filter {
            since: self.since,
            kind: self.kind,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The serve address to ask; 0.0.0.0 means this machine.
    #[arg(long, env = "LISTEN_ADDR", default_value = defaults::LISTEN_ADDR, value_parser = address("LISTEN_ADDR"))]
    pub listen_addr: SocketAddr,

    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = defaults::HEALTHCHECK_TIMEOUT_MS,
          value_parser = whole("--timeout-ms", max::DB_TIMEOUT_MS))]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub db: DbSettings,
    pub listen_addr: SocketAddr,
    /// Where /metrics is served apart; `None`: on `listen_addr`.
    pub metrics_addr: Option<SocketAddr>,
    pub webhook_token: Option<String>,
    /// The operator console's secret; `None`: no console.
    pub admin_token: Option<String>,
    /// The account's zone, for records of CallHippo's API the console's Replay reads again.
    pub api_zone: chrono_tz::Tz,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub raw_retention_days: Option<u32>,
    pub call_retention_days: Option<u32>,
    /// How the statistics views' summaries are computed.
    pub report: ReportSettings,
    pub batch: BatchSettings,
    /// Reconciliation with CallHippo's API; `None` without a token.
    pub reconcile: Option<crate::reconcile::ReconcileSettings>,
}

impl ServeSettings {
    /// The defaults for everything but the database.
    pub fn new(database_url: &str) -> Self {
        ServeSettings {
            db: DbSettings {
                url: database_url.to_owned(),
                pool_size: defaults::DB_POOL_SIZE as u32,
                timeout: defaults::DB_TIMEOUT,
                pooler: crate::store::Pooler::None,
            },
            listen_addr: defaults::LISTEN_ADDR.parse().expect("a valid address"),
            metrics_addr: None,
            webhook_token: None,
            admin_token: None,
            api_zone: chrono_tz::UTC,
            max_body_bytes: defaults::MAX_BODY_BYTES as usize,
            max_connections: defaults::MAX_CONNECTIONS as usize,
            spool_dir: PathBuf::from(defaults::SPOOL_DIR),
            spool_max_bytes: defaults::SPOOL_MAX_BYTES,
            raw_retention_days: None,
            call_retention_days: None,
            report: ReportSettings::default(),
            batch: BatchSettings::default(),
            reconcile: None,
        }
    }
}

/// A setting that is missing or wrong; its `Display` is the one line printed at start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingError(pub String);

impl Cli {
    /// Parses the command line and environment. A value that does not parse is one line
    /// naming the setting, as every other setting error (exit code 2); help, version and
    /// usage mistakes are clap's own.
    pub fn parse_or_exit() -> Cli {
        match Cli::try_parse() {
            Ok(cli) => cli,
            Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation => {
                match std::error::Error::source(&e) {
                    Some(ours) => eprintln!("error: {ours}"),
                    None => eprintln!("error: {}", e.to_string().lines().next().unwrap_or("")),
                }
                std::process::exit(2)
            }
            Err(e) => e.exit(),
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
        crate::store::connect_options(url, defaults::COMMAND_TIMEOUT).map_err(SettingError)?;
        Ok(url.to_owned())
    }

    /// The database settings of `migrate` and `replay`.
    pub fn db_settings(&self) -> Result<DbSettings, SettingError> {
        Ok(DbSettings {
            url: self.database_url()?,
            pool_size: defaults::COMMAND_POOL_SIZE,
            timeout: defaults::COMMAND_TIMEOUT,
            pooler: self.db_pooler,
        })
    }
}

impl ServeArgs {
    fn reconcile_settings(&self) -> Option<crate::reconcile::ReconcileSettings> {
        let token = self.api.token().ok()?;
        Some(crate::reconcile::ReconcileSettings {
            api_url: self.api.api_url.clone(),
            token: token.to_owned(),
            zone: self.api.account.zone,
            every: self.reconcile_interval,
            days: self.reconcile_days as u32,
        })
    }

    pub fn settings(
        &self,
        database_url: String,
        pooler: crate::store::Pooler,
    ) -> Result<ServeSettings, SettingError> {
        let webhook_token = match self.webhook_token.as_deref() {
            None => None,
            Some(t) if t.trim().is_empty() => {
                return Err(SettingError(
                    "WEBHOOK_TOKEN is set but empty: unset it to leave the endpoint open, or give a secret".into(),
                ))
            }
            Some(t) => Some(t.to_owned()),
        };
        let admin_token = admin_token(self.admin_token.as_deref(), webhook_token.as_deref())?;
        let timeout = Duration::from_millis(self.db_timeout_ms);
        Ok(ServeSettings {
            db: DbSettings {
                url: database_url,
                pool_size: self.db_pool_size as u32,
                timeout,
                pooler,
            },
            listen_addr: self.listen_addr,
            metrics_addr: self.metrics_addr,
            webhook_token,
            admin_token,
            api_zone: self.api.account.zone,
            max_body_bytes: self.max_body_bytes as usize,
            max_connections: self.max_connections as usize,
            spool_dir: self.spool_dir.clone(),
            spool_max_bytes: self.spool_max_bytes,
            raw_retention_days: (self.raw_retention_days)
                .and_then(|RetentionDays(d)| d)
                .map(|d| d as u32),
            call_retention_days: (self.call_retention_days)
                .and_then(|RetentionDays(d)| d)
                .map(|d| d as u32),
            report: self.report.settings(),
            batch: BatchSettings {
                batch_max: self.batch_max as usize,
                workers: self.writers as usize,
                timeout,
            },
            reconcile: self.reconcile_settings(),
        })
    }
}

/// ADMIN_TOKEN, checked: empty is unset (the console is off, as compose files pass unset
/// settings), and it is not the webhook's token (which travels in the URL CallHippo is
/// given, so it is known to more people and logs than the console's should be).
fn admin_token(admin: Option<&str>, webhook: Option<&str>) -> Result<Option<String>, SettingError> {
    match admin {
        None => Ok(None),
        Some(t) if t.trim().is_empty() => Ok(None),
        Some(t) if Some(t) == webhook => Err(SettingError(
            "ADMIN_TOKEN is the same as WEBHOOK_TOKEN: give the console a secret of its own (openssl rand -hex 16)"
                .into(),
        )),
        Some(t) => Ok(Some(t.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("callhippo-ingest").chain(args.iter().copied()))
    }

    fn serve_args(cli: &Cli) -> &ServeArgs {
        match &cli.command {
            Command::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let cli = parse(&["serve", "--database-url", "postgres://u@h/db"]).unwrap();
        let s = serve_args(&cli)
            .settings(cli.database_url().unwrap(), cli.db_pooler)
            .unwrap();
        assert_eq!(s.max_body_bytes, 262_144);
        assert_eq!(s.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.webhook_token, None);
        assert_eq!(cli.log_format, LogFormat::Text);
        let d = ServeSettings::new("postgres://u@h/db");
        assert_eq!(s.db.pool_size, d.db.pool_size);
        assert_eq!(s.db.timeout, d.db.timeout);
        assert_eq!(s.batch.batch_max, d.batch.batch_max);
        assert_eq!(s.batch.workers, d.batch.workers);
        assert_eq!(s.spool_max_bytes, d.spool_max_bytes);
        assert_eq!(s.spool_dir, d.spool_dir);
        assert_eq!(s.db.pooler, crate::store::Pooler::None);
    }

    #[test]
    fn db_pooler_reaches_serve_and_the_commands() {
        use crate::store::Pooler;
        let url = "postgres://u@h/db";
        let cli = parse(&["serve", "--database-url", url, "--db-pooler", "transaction"]).unwrap();
        let s = serve_args(&cli).settings(cli.database_url().unwrap(), cli.db_pooler);
        assert_eq!(s.unwrap().db.pooler, Pooler::Transaction);
        let cli = parse(&[
            "--db-pooler",
            "Transaction",
            "replay",
            "--database-url",
            url,
        ])
        .unwrap();
        assert_eq!(cli.db_settings().unwrap().pooler, Pooler::Transaction);
    }

    /// The error of a value that does not parse: ours, naming the setting.
    fn value_error(args: &[&str]) -> String {
        let e = parse(args).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
        std::error::Error::source(&e).unwrap().to_string()
    }

    #[test]
    fn bad_settings_name_themselves() {
        let e = value_error(&["serve", "--max-body-bytes", "lots"]);
        assert_eq!(
            e,
            "MAX_BODY_BYTES must be a whole number from 1 to 67108864, not \"lots\""
        );
        assert!(value_error(&["serve", "--listen-addr", "nowhere"]).starts_with("LISTEN_ADDR"));
        assert!(value_error(&["serve", "--writers", "0"]).starts_with("WRITERS"));
        assert!(value_error(&["migrate", "--log-format", "xml"]).starts_with("LOG_FORMAT"));
        assert!(value_error(&["migrate", "--db-pooler", "statement"]).starts_with("DB_POOLER"));
        assert!(value_error(&["replay", "--since", "soon"]).starts_with("--since"));
        assert!(value_error(&["replay", "--kind", "fax"]).starts_with("--kind"));
        assert!(
            value_error(&["serve", "--raw-retention-days", "x"]).starts_with("RAW_RETENTION_DAYS")
        );
        for (given, kept) in [(" ", None), ("90", Some(90))] {
            let cli = parse(&["serve", "--raw-retention-days", given]).unwrap();
            let s = serve_args(&cli)
                .settings("postgres://u@h/db".into(), Default::default())
                .unwrap();
            assert_eq!(s.raw_retention_days, kept, "{given:?}");
        }
        let cli = parse(&["serve", "--webhook-token", " "]).unwrap();
        let e = serve_args(&cli)
            .settings("postgres://u@h/db".into(), Default::default())
            .unwrap_err();
        assert!(e.0.starts_with("WEBHOOK_TOKEN"), "{e}");
        let cli = parse(&[
            "serve",
            "--admin-token",
            "same-secret-0123456",
            "--webhook-token",
            "same-secret-0123456",
        ])
        .unwrap();
        let e = serve_args(&cli)
            .settings("postgres://u@h/db".into(), Default::default())
            .unwrap_err();
        assert!(e.0.starts_with("ADMIN_TOKEN"), "{e}");
        let cli = parse(&["serve", "--admin-token", " "]).unwrap();
        let s = serve_args(&cli)
            .settings("postgres://u@h/db".into(), Default::default())
            .unwrap();
        assert_eq!(s.admin_token, None, "empty: the console is off");
        let cli = parse(&["serve", "--admin-token", "console-secret-0123"]).unwrap();
        let s = serve_args(&cli)
            .settings("postgres://u@h/db".into(), Default::default())
            .unwrap();
        assert_eq!(s.admin_token.as_deref(), Some("console-secret-0123"));
        let cli = parse(&["migrate", "--database-url", "mysql://x"]).unwrap();
        let e = cli.database_url().unwrap_err();
        assert!(e.0.starts_with("DATABASE_URL"), "{e}");
        assert!(!e.0.contains('\n'), "one line: {e}");
    }
}
