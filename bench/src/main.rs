//! `loadgen`: the load generator of `bench/run`.
//!
//! ```text
//! loadgen wait-ready --addr HOST:PORT [--timeout S] [--pid PID] [--path P] [--drained]
//! loadgen run --addr HOST:PORT [--conns N] [--duration S] [--warmup S] [--dup]
//!             [--threads N] [--prebuild N] [--keys FILE] [--run-id HEX]
//!             [--stop-file FILE] [--keep-going] [--request-timeout S] [--rate N]
//! loadgen verify --keys FILE --database-url URL [--exact]
//! loadgen hostile --addr HOST:PORT [--max-body-bytes N] [--conns N] [--timeout S] [--verbose]
//! ```
//!
//! `run` opens N keep-alive HTTP/1.1 connections, each sending pre-built webhook bodies one
//! after the other for the duration, records latencies in an HDR histogram, counts answers by
//! HTTP status and `status` word, and writes the key of every acknowledged event (200/202) to
//! `--keys`. `verify` checks that each of those keys is in the tables. Both end with one
//! `RESULT key=value …` line for scripts. `hostile` sends a few hundred malformed bodies and
//! fails when any gets a 5xx or no answer (`bench/drill`, the reliability drill, uses it).

mod gen;
mod hostile;
mod load;
mod verify;

use std::time::Duration;

use anyhow::{bail, Context, Result};

pub struct Args {
    rest: Vec<String>,
}

impl Args {
    fn take_value(&mut self, name: &str) -> Result<Option<String>> {
        if let Some(i) = self.rest.iter().position(|a| a == name) {
            if i + 1 >= self.rest.len() {
                bail!("{name} needs a value");
            }
            let v = self.rest.remove(i + 1);
            self.rest.remove(i);
            return Ok(Some(v));
        }
        let prefix = format!("{name}=");
        if let Some(i) = self.rest.iter().position(|a| a.starts_with(&prefix)) {
            let v = self.rest.remove(i)[prefix.len()..].to_string();
            return Ok(Some(v));
        }
        Ok(None)
    }
    fn flag(&mut self, name: &str) -> bool {
        if let Some(i) = self.rest.iter().position(|a| a == name) {
            self.rest.remove(i);
            true
        } else {
            false
        }
    }
    fn num<T: std::str::FromStr>(&mut self, name: &str, default: T) -> Result<T> {
        match self.take_value(name)? {
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}: not a number: {v}")),
            None => Ok(default),
        }
    }
    fn finish(self) -> Result<()> {
        if let Some(a) = self.rest.first() {
            bail!("unknown argument: {a}");
        }
        Ok(())
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("loadgen: error: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> Result<()> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || argv[0] == "-h" || argv[0] == "--help" {
        println!("{}", USAGE);
        return Ok(());
    }
    let cmd = argv.remove(0);
    let mut args = Args { rest: argv };
    match cmd.as_str() {
        "wait-ready" => {
            let addr = args.take_value("--addr")?.context("--addr is required")?;
            let timeout: f64 = args.num("--timeout", 60.0)?;
            let pid: Option<u32> = match args.take_value("--pid")? {
                Some(p) => Some(p.parse().context("--pid: a process id")?),
                None => None,
            };
            let path = args
                .take_value("--path")?
                .unwrap_or_else(|| "/readyz".into());
            let drained = args.flag("--drained");
            args.finish()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(load::wait_until(
                &addr,
                &path,
                drained,
                Duration::from_secs_f64(timeout),
                pid,
            ))
        }
        "hostile" => {
            let addr = args.take_value("--addr")?.context("--addr is required")?;
            let max_body: usize = args.num("--max-body-bytes", 262_144)?;
            let conns: usize = args.num("--conns", 4)?;
            let timeout: f64 = args.num("--timeout", 40.0)?;
            let verbose = args.flag("--verbose");
            args.finish()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let failures = rt.block_on(hostile::run(
                &addr,
                max_body,
                conns.clamp(1, 64),
                Duration::from_secs_f64(timeout),
                verbose,
            ))?;
            if failures > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        "run" => {
            let cfg = load::Config {
                addr: args.take_value("--addr")?.context("--addr is required")?,
                conns: args.num("--conns", 64)?,
                duration: Duration::from_secs_f64(args.num("--duration", 20.0)?),
                warmup: Duration::from_secs_f64(args.num("--warmup", 1.0)?),
                dup: args.flag("--dup"),
                prebuild: args.num("--prebuild", 0)?,
                keys: args.take_value("--keys")?,
                run_id: match args.take_value("--run-id")? {
                    Some(v) => u32::from_str_radix(&v, 16).context("--run-id: 8 hex digits")?,
                    None => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)?
                            .as_nanos();
                        (now as u32) ^ std::process::id().rotate_left(16)
                    }
                },
                stop_file: args.take_value("--stop-file")?,
                keep_going: args.flag("--keep-going"),
                request_timeout: match args.take_value("--request-timeout")? {
                    Some(v) => Some(Duration::from_secs_f64(
                        v.parse().context("--request-timeout: seconds")?,
                    )),
                    None => None,
                },
                rate: args.num("--rate", 0.0)?,
            };
            let threads: usize = args.num("--threads", 1)?;
            args.finish()?;
            if cfg.conns == 0 || cfg.conns > 1000 {
                bail!("--conns must be between 1 and 1000");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()?;
            rt.block_on(load::run(cfg))
        }
        "verify" => {
            let keys = args.take_value("--keys")?.context("--keys is required")?;
            let url = match args.take_value("--database-url")? {
                Some(u) => u,
                None => std::env::var("DATABASE_URL")
                    .context("--database-url or DATABASE_URL is required")?,
            };
            let exact = args.flag("--exact");
            args.finish()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let v = rt.block_on(verify::verify(&keys, &url, exact))?;
            if v.missing > 0 || (exact && v.not_exact > 0) {
                std::process::exit(1);
            }
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

const USAGE: &str = "\
usage:
  loadgen wait-ready --addr HOST:PORT [--timeout S] [--pid PID] [--path /readyz] [--drained]
  loadgen run --addr HOST:PORT [--conns N] [--duration S] [--warmup S] [--dup]
              [--threads N] [--prebuild N] [--keys FILE] [--run-id HEX]
              [--stop-file FILE] [--keep-going] [--request-timeout S] [--rate N]
  loadgen verify --keys FILE [--database-url URL] [--exact]
  loadgen hostile --addr HOST:PORT [--max-body-bytes N] [--conns N] [--timeout S] [--verbose]";
