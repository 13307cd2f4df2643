use std::process::ExitCode;

use clap::Parser;

use callhippo_ingest::config::{Cli, Command, SettingError};
use callhippo_ingest::startup::{self, Application};
use callhippo_ingest::telemetry;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<SettingError>() {
                // A setting: one line that names it.
                Some(s) => eprintln!("error: {s}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(if e.is::<SettingError>() { 2 } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format()?, &cli.log_filter)?;
    match &cli.command {
        Command::Serve(args) => {
            let settings = args.settings(cli.database_url()?)?;
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            startup::migrate_once(&cli.db_settings()?).await?;
        }
        Command::Replay(_) => {
            anyhow::bail!("replay is not implemented yet");
        }
    }
    Ok(())
}
