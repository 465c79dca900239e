//! streamfabric-loadgen: a kafka-producer-perf-test for Kinesis endpoints.

mod answers;
mod cli;
mod client;
mod drain;
mod null_server;
mod probe;
mod procstat;
mod pull;
mod run;
mod stats;
mod stream;
mod verify;
mod workload;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run::run(args)),
        Command::NullServer(args) => runtime.block_on(null_server::serve(args)).map(|()| run::Outcome::Success),
        Command::Probe(args) => runtime.block_on(probe::probe(args)).map(|()| run::Outcome::Success),
        Command::Pull(args) => runtime.block_on(pull::pull(args)).map(|()| run::Outcome::Success),
    };
    // Worker tasks aborted on an error may still hold connections; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(run::Outcome::Success) => ExitCode::SUCCESS,
        Ok(run::Outcome::VerifyFailed) => {
            eprintln!("error: verification failed (missing or duplicated records)");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
