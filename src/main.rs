use std::process::ExitCode;
use std::time::Duration;

use callhippo_ingest::backfill;
use callhippo_ingest::callhippo_api::{ApiClient, ApiError};
use callhippo_ingest::config::{Cli, Command, SettingError};
use callhippo_ingest::startup::{self, Application};
use callhippo_ingest::store::{self, PgSink};
use callhippo_ingest::{forget, healthcheck, replay, rollup, telemetry};

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<SettingError>() {
                // A setting: one line that names it.
                Some(s) => eprintln!("error: {s}"),
                None => eprintln!("error: {}", telemetry::one_line(&e)),
            }
            ExitCode::from(if e.is::<SettingError>() { 2 } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _logs = telemetry::init(cli.log_format, &cli.log_filter)?;
    match &cli.command {
        Command::Serve(args) => {
            let settings = args.settings(cli.database_url()?, cli.db_pooler)?;
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            startup::migrate_once(&cli.db_settings()?).await?;
        }
        Command::Replay(args) => {
            let db = cli.db_settings()?;
            startup::migrate_once(&db).await?;
            let sink = PgSink::new(startup::command_pool(&db)?);
            let progress = replay::progress_printer(Duration::from_secs(2));
            let summary = replay::replay(
                &sink,
                args.account.zone,
                &args.filter(),
                args.batch as usize,
                progress,
            )
            .await?;
            println!("replay: {summary}");
        }
        Command::Backfill(args) => {
            let (from, to) = args.days()?;
            let client =
                ApiClient::new(&args.api.api_url, args.api.token()?).map_err(SettingError)?;
            let db = cli.db_settings()?;
            startup::migrate_once(&db).await?;
            let sink = PgSink::new(startup::command_pool(&db)?);
            let range = backfill::Range {
                from,
                to,
                zone: args.api.account.zone,
            };
            let label = format!(
                "backfill: call logs {from}..{to} ({})",
                args.api.account.zone
            );
            let progress = backfill::Progress::new(&label);
            let result =
                backfill::sync_calls(&client, &sink, range, backfill::Trigger::Backfill, |f| {
                    progress.page(f)
                })
                .await;
            progress.done();
            // A token the API refused is a setting to fix, like any other.
            let figures = result.map_err(|e| match e {
                backfill::RunError::Api(e @ ApiError::TokenRefused(_)) => {
                    anyhow::Error::new(SettingError(e.to_string()))
                }
                other => anyhow::Error::new(other),
            })?;
            println!("{label}: {figures}");
        }
        Command::Forget(args) => {
            let ids = args.identifiers()?;
            let db = cli.db_settings()?;
            startup::migrate_once(&db).await?;
            let pool = store::slow_work_pool(&db).map_err(anyhow::Error::msg)?;
            let report = forget::forget(&pool, &ids, args.dry_run, &args.spool_dir).await?;
            println!("{report}");
        }
        Command::Rollup(args) => {
            let db = cli.db_settings()?;
            startup::migrate_once(&db).await?;
            let pool = store::slow_work_pool(&db).map_err(anyhow::Error::msg)?;
            println!("{}", rollup::rollup_now(&pool, &args.settings()).await?);
        }
        Command::Healthcheck(args) => {
            let timeout = Duration::from_millis(args.timeout_ms);
            match healthcheck::check(args.listen_addr, timeout) {
                Ok(line) => println!("{line}"),
                Err(e) => anyhow::bail!(e),
            }
        }
    }
    Ok(())
}
