//! `loadgen`: the load generator of `bench/run`.
//!
//! ```text
//! loadgen wait-ready --addr HOST:PORT [--timeout S] [--pid PID] [--path P] [--drained]
//! loadgen run --addr HOST:PORT [--conns N] [--duration S] [--warmup S] [--dup]
//!             [--threads N] [--prebuild N] [--keys FILE] [--run-id HEX]
//!             [--stop-file FILE] [--keep-going] [--request-timeout S] [--rate N]
//! loadgen verify --keys FILE --database-url URL [--exact]
//! loadgen hostile --addr HOST:PORT [--max-body-bytes N] [--conns N] [--timeout S] [--verbose]
//! loadgen probe endless|hold|guesses|tags|flood|expect|send --addr HOST:PORT [--token T] …
//! ```
//!
//! `run` opens N keep-alive HTTP/1.1 connections, each sending pre-built webhook bodies one
//! after the other for the duration, records latencies in an HDR histogram, counts answers by
//! HTTP status and `status` word, and writes the key of every acknowledged event (200/202) to
//! `--keys`. `verify` checks that each of those keys is in the tables. Both end with one
//! `RESULT key=value …` line for scripts. `hostile` sends a few hundred malformed bodies and
//! fails when any gets a 5xx or no answer (`bench/drill`, the reliability drill, uses it).
//! `probe` runs one of the hostile clients of the drill's `probes` scenario (`probe.rs`).

mod gen;
mod hostile;
mod load;
mod probe;
mod queries;
mod verify;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "The load generator of bench/run and bench/drill."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Waits until the server answers PATH with 200 (and, with --drained, an empty spool).
    WaitReady {
        #[arg(long)]
        addr: String,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Give up when this process exits.
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long, default_value = "/readyz")]
        path: String,
        #[arg(long)]
        drained: bool,
    },
    /// Sends pre-built webhook bodies over keep-alive connections for a duration.
    Run {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1000))]
        conns: u32,
        /// Measured seconds.
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        /// Seconds sent before the measured window, not counted.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Half of the requests repeat an event already sent.
        #[arg(long)]
        dup: bool,
        /// Tokio worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Bodies to build before starting (0: enough for the run).
        #[arg(long, default_value_t = 0)]
        prebuild: usize,
        /// Where to write the key of every acknowledged event.
        #[arg(long)]
        keys: Option<String>,
        /// 8 hex digits that make this run's keys unique (default: from the clock).
        #[arg(long, value_parser = hex_u32)]
        run_id: Option<u32>,
        /// Stop when this file appears.
        #[arg(long)]
        stop_file: Option<String>,
        /// Keep sending after transport errors (the server is being killed).
        #[arg(long)]
        keep_going: bool,
        /// Seconds before a request counts as timed out.
        #[arg(long)]
        request_timeout: Option<f64>,
        /// Requests per second in all (0: as fast as answers come).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// Checks that every acknowledged key is in the tables.
    Verify {
        #[arg(long)]
        keys: String,
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Also check that each row holds exactly what was sent.
        #[arg(long)]
        exact: bool,
    },
    /// Times the first COUNT numbered statements of a cookbook file, server side (median).
    Queries {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[arg(long, default_value = "docs/cookbook.sql")]
        file: String,
        #[arg(long, default_value_t = 10)]
        count: usize,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// Sends a few hundred malformed bodies; fails when any gets a 5xx or no answer.
    Hostile {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 262_144)]
        max_body_bytes: usize,
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        conns: u32,
        #[arg(long, default_value_t = 40.0)]
        timeout: f64,
        #[arg(long)]
        verbose: bool,
    },
    /// One hostile client of bench/drill's probes scenario; prints its figures.
    Probe {
        #[command(subcommand)]
        probe: probe::Probe,
    },
}

fn hex_u32(raw: &str) -> Result<u32, String> {
    u32::from_str_radix(raw, 16).map_err(|_| format!("--run-id: 8 hex digits, not {raw:?}"))
}

fn main() {
    if let Err(e) = real_main(Cli::parse()) {
        eprintln!("loadgen: error: {e:#}");
        std::process::exit(2);
    }
}

fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::WaitReady {
            addr,
            timeout,
            pid,
            path,
            drained,
        } => current_thread()?.block_on(load::wait_until(
            &addr,
            &path,
            drained,
            Duration::from_secs_f64(timeout),
            pid,
        )),
        Cmd::Queries {
            database_url,
            file,
            count,
            repeat,
        } => current_thread()?.block_on(queries::run(&database_url, &file, count, repeat.max(1))),
        Cmd::Hostile {
            addr,
            max_body_bytes,
            conns,
            timeout,
            verbose,
        } => {
            let failures = current_thread()?.block_on(hostile::run(
                &addr,
                max_body_bytes,
                conns as usize,
                Duration::from_secs_f64(timeout),
                verbose,
            ))?;
            if failures > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Probe { probe } => current_thread()?.block_on(probe::run(probe)),
        Cmd::Run {
            addr,
            conns,
            duration,
            warmup,
            dup,
            threads,
            prebuild,
            keys,
            run_id,
            stop_file,
            keep_going,
            request_timeout,
            rate,
        } => {
            let run_id = match run_id {
                Some(id) => id,
                None => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_nanos();
                    (now as u32) ^ std::process::id().rotate_left(16)
                }
            };
            let cfg = load::Config {
                addr,
                conns: conns as usize,
                duration: Duration::from_secs_f64(duration),
                warmup: Duration::from_secs_f64(warmup),
                dup,
                prebuild,
                keys,
                run_id,
                stop_file,
                keep_going,
                request_timeout: request_timeout.map(Duration::from_secs_f64),
                rate,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()?;
            rt.block_on(load::run(cfg))
        }
        Cmd::Verify {
            keys,
            database_url,
            exact,
        } => {
            let v = current_thread()?.block_on(verify::verify(&keys, &database_url, exact))?;
            if v.missing > 0 || (exact && v.not_exact > 0) {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
