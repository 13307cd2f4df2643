//! The first connection of a command: the database named in `DATABASE_URL` is created when
//! it does not exist yet, and what cannot be fixed by waiting (a wrong password, a database
//! the role may not create) becomes one line that names the server, the database and the
//! user, and says what to do.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Executor, PgConnection};

use super::error::sqlstate;
use crate::config::SettingError;

/// Where `DATABASE_URL` points, for messages: `database "callhippo" at 127.0.0.1:5432 as
/// user "postgres"`. Never the password.
pub fn describe(opts: &PgConnectOptions) -> String {
    format!(
        "database {:?} at {}:{} as user {:?}",
        database_name(opts),
        opts.get_host(),
        opts.get_port(),
        opts.get_username()
    )
}

/// The database a connection opens: PostgreSQL takes the user's name when none is given.
fn database_name(opts: &PgConnectOptions) -> &str {
    opts.get_database().unwrap_or(opts.get_username())
}

/// What the server said, once: sqlx's own text repeats its cause's.
pub fn reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "no answer in time".to_owned(),
        other => other.to_string(),
    }
}

/// A connection error that waiting will not cure is a setting to fix (exit code 2).
fn setting_error(opts: &PgConnectOptions, e: &sqlx::Error) -> Option<SettingError> {
    let code = sqlstate(e)?;
    let advice = match code.as_str() {
        // invalid_password, invalid_authorization_specification
        "28P01" | "28000" => "check the user and password in DATABASE_URL",
        // protocol_violation: PgBouncer refuses the startup parameter `options`.
        "08P01" if reason(e).contains("unsupported startup parameter") => {
            "a connection pooler answers there (PgBouncer?): set DB_POOLER=transaction"
        }
        _ => return None,
    };
    Some(SettingError(format!(
        "DATABASE_URL: {} refused the connection: {}; {advice}",
        describe(opts),
        reason(e)
    )))
}

/// Connects, within `timeout`, creating the database first when it is missing and the role
/// may create it.
pub async fn connect_or_create(
    opts: &PgConnectOptions,
    timeout: Duration,
) -> anyhow::Result<PgConnection> {
    match connect(opts, timeout).await {
        Err(e) if sqlstate(&e).as_deref() == Some("3D000") => {
            create(opts, timeout).await?;
            Ok(connect(opts, timeout)
                .await
                .map_err(|e| unreachable(opts, e))?)
        }
        other => other.map_err(|e| unreachable(opts, e)),
    }
}

/// A connection that failed for a reason waiting may cure (or that is not known to be a
/// setting): what the server said, where.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    message: String,
    /// The server cannot be reached now (see [`super::is_unavailable`]).
    pub unavailable: bool,
}

/// The error of a connection that failed: a setting when waiting will not help.
fn unreachable(opts: &PgConnectOptions, e: sqlx::Error) -> anyhow::Error {
    if let Some(setting) = setting_error(opts, &e) {
        return setting.into();
    }
    ConnectError {
        message: format!("{}: {}", describe(opts), reason(&e)),
        unavailable: super::is_unavailable(&e),
    }
    .into()
}

async fn connect(opts: &PgConnectOptions, timeout: Duration) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(timeout, opts.connect())
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// `CREATE DATABASE`, from the server's maintenance database. Another process creating it at
/// the same moment is no error.
async fn create(opts: &PgConnectOptions, timeout: Duration) -> anyhow::Result<()> {
    let name = database_name(opts).to_owned();
    let mut admin = None;
    let mut last_error = None;
    for maintenance in ["postgres", "template1"] {
        match connect(&opts.clone().database(maintenance), timeout).await {
            Ok(conn) => {
                admin = Some(conn);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(mut admin) = admin else {
        let e = last_error.expect("tried at least once");
        if let Some(setting) = setting_error(opts, &e) {
            return Err(setting.into());
        }
        return Err(ConnectError {
            message: format!(
                "{} does not exist, and the server's postgres database, to create it from, \
                 did not answer: {}",
                describe(opts),
                reason(&e)
            ),
            unavailable: super::is_unavailable(&e),
        }
        .into());
    };
    // Creating a database copies its template and waits for a checkpoint: longer, on a
    // busy server, than the service's statement timeout.
    // (Behind a pooler in transaction mode, no session setting: it would stay on a server
    // connection that others use; the connection has no statement timeout of ours anyway.)
    if !super::pooler::active() {
        ((&mut admin).execute("SET statement_timeout = 0").await)
            .map_err(|e| unreachable(opts, e))?;
    }
    // An identifier cannot be bound: it is quoted instead.
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    // A plain statement: CREATE DATABASE runs outside any transaction, and unprepared.
    match (&mut admin).execute(&*statement).await {
        Ok(_) => {
            tracing::info!(database = %name, "created the database named in DATABASE_URL");
            Ok(())
        }
        // duplicate_database, or the catalogue's unique index: created meanwhile.
        Err(e) if matches!(sqlstate(&e).as_deref(), Some("42P04" | "23505")) => Ok(()),
        // insufficient_privilege: a setting to fix.
        Err(e) if sqlstate(&e).as_deref() == Some("42501") => Err(SettingError(format!(
            "DATABASE_URL: {} does not exist, and the user may not create it ({}); \
             create it as a superuser (CREATE DATABASE {:?} OWNER {:?}) or grant the user CREATEDB",
            describe(opts),
            reason(&e),
            name,
            opts.get_username()
        ))
        .into()),
        Err(e) => Err(ConnectError {
            message: format!("{}: could not be created: {}", describe(opts), reason(&e)),
            unavailable: super::is_unavailable(&e),
        }
        .into()),
    }
}
