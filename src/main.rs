//! Thin binary: parse, set up logging, run one command, write its result on stdout, map the
//! error to an exit code.
#![allow(clippy::print_stdout)]

use std::io::Write;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use bakery::bake::BakeResult;
use bakery::base::BaseResult;
use bakery::cli::{BaseCommand, Cli, Command};
use bakery::context::Globals;
use bakery::error;

fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .ok()
        .filter(|_| std::env::var("RUST_LOG").is_ok_and(|v| !v.is_empty()))
        .unwrap_or_else(|| EnvFilter::new(format!("bakery={default},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

fn print_json<T: serde::Serialize>(v: &T, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    if let Some(f) = file {
        bakery::disk::image::write_atomic(f, format!("{text}\n").as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

/// A result that is already text (a dry-run plan, the merged recipe).
fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")?;
    if !text.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let g = Globals {
        work_dir: cli.work_dir.clone(),
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Session => Ok(bakery::provision::session::main()),
        Command::Bake(args) => {
            bakery::doctor::require_root("bake")?;
            match bakery::bake::run(&args, &g)? {
                BakeResult::Printed(text) => {
                    print_text(&text)?;
                    Ok(0)
                }
                BakeResult::Baked(m) => {
                    print_json(&m, args.manifest.as_deref())?;
                    if let (Some(url), Some(out)) = (&args.boot_check, &m.output) {
                        let report = bakery::boot::boot_check(
                            &out.path,
                            url,
                            std::time::Duration::from_secs(args.boot_timeout),
                        )?;
                        print_json(&report, None)?;
                    }
                    Ok(0)
                }
            }
        }
        Command::Base(BaseCommand::Build(args)) => {
            if !args.dry_run {
                bakery::doctor::require_root("base build")?;
                bakery::base::require_tools()?;
            }
            match bakery::base::build(&args, &g)? {
                BaseResult::Printed(text) => print_text(&text)?,
                BaseResult::Built(m) => print_json(&m, args.manifest.as_deref())?,
            }
            Ok(0)
        }
        Command::Base(BaseCommand::Refresh(args)) => {
            bakery::doctor::require_root("base refresh")?;
            let m = bakery::base::refresh::refresh(&args, &g)?;
            print_json(&m, args.manifest.as_deref())?;
            Ok(0)
        }
        Command::Base(BaseCommand::List(args)) => {
            let v = bakery::base::list(&args)?;
            print_json(&v, None)?;
            Ok(0)
        }
        Command::Boot(args) => {
            let report = bakery::boot::run(&args)?;
            print_json(&report, None)?;
            Ok(0)
        }
        Command::Images(bakery::cli::images::ImagesCommand::Prune(args)) => {
            let report = bakery::images::prune::run(&args)?;
            if args.json {
                print_json(&report, None)?;
            } else {
                print!("{}", report.to_text());
            }
            Ok(if report.failed() { 1 } else { 0 })
        }
        Command::Doctor(args) => bakery::doctor::run(&args, &g),
        Command::Deploy(args) => bakery::deploy::run_deploy(&args),
        Command::Rollback(args) => bakery::deploy::run_rollback(&args),
        Command::Status(args) => bakery::deploy::run_status(&args),
        Command::Canary(bakery::cli::canary::CanaryCommand::Judge(args)) => {
            let judged = bakery::canary::run_judge(&args)?;
            if args.json {
                print_json(&judged.judgement, None)?;
            } else {
                print_text(&bakery::canary::table(&judged.judgement))?;
            }
            judged.outcome()
        }
        Command::Canary(bakery::cli::canary::CanaryCommand::Approve(args)) => {
            print_json(
                &bakery::deploy::canary_stage::run_approval(&args, true)?,
                None,
            )?;
            Ok(0)
        }
        Command::Canary(bakery::cli::canary::CanaryCommand::Reject(args)) => {
            print_json(
                &bakery::deploy::canary_stage::run_approval(&args, false)?,
                None,
            )?;
            Ok(0)
        }
        Command::Gc(args) => {
            bakery::doctor::require_root("gc")?;
            let report = bakery::gc::run(&args, &g)?;
            print_json(&report, None)?;
            Ok(if report.failed.is_empty() { 0 } else { 1 })
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Session) {
        init_tracing(cli.verbose, cli.quiet);
    } else {
        init_tracing(0, true);
    }
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("bakery: error: {msg}");
            error::exit_code(&e)
        }
    };
    std::process::exit(code);
}
