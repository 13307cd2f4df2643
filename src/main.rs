use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use callhippo_ingest::config::{Cli, Command, SettingError};
use callhippo_ingest::startup::{self, Application};
use callhippo_ingest::{healthcheck, replay, telemetry};

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let _logs = telemetry::init(cli.log_format()?, &cli.log_filter)?;
    match &cli.command {
        Command::Serve(args) => {
            let settings = args.settings(cli.database_url()?)?;
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            startup::migrate_once(&cli.db_settings()?).await?;
        }
        Command::Replay(args) => {
            let filter = args.filter()?;
            let batch = args.batch()?;
            let db = cli.db_settings()?;
            startup::migrate_once(&db).await?;
            let pool = startup::command_pool(&db)?;
            let summary = replay::replay(
                &pool,
                &filter,
                batch,
                replay::progress_printer(Duration::from_secs(2)),
            )
            .await?;
            println!("replay: {summary}");
        }
        Command::Healthcheck(args) => {
            let addr = args.listen_addr.trim().parse().map_err(|_| {
                SettingError(format!(
                    "LISTEN_ADDR must be an address and port such as 0.0.0.0:8080, not {:?}",
                    args.listen_addr
                ))
            })?;
            let timeout = args
                .timeout_ms
                .trim()
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| {
                    SettingError(format!(
                        "--timeout-ms must be a whole number, not {:?}",
                        args.timeout_ms
                    ))
                })?;
            match healthcheck::check(addr, timeout) {
                Ok(line) => println!("{line}"),
                Err(e) => anyhow::bail!(e),
            }
        }
    }
    Ok(())
}
