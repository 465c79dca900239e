use clap::{Parser, Subcommand};
use streamfabric_broker::BrokerConfig;

// Every request allocates per record (keys, data, answers) from many threads; mimalloc's
// thread-local free lists cost a fraction of glibc malloc's here (see the issue note's profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// streamfabric's broker: the AWS Kinesis Data Streams API on durable shard logs.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Kinesis API (and metrics, health and stats on the admin address).
    Serve(BrokerConfig),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        // `kubectl logs` shows escape codes as they are: colour only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STREAMFABRIC_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Command::Serve(config) = Cli::parse().command;
    let data_dir = config.data_dir.clone();
    match streamfabric_broker::start(config).await {
        Ok(running) => {
            tracing::info!(
                api = %running.api_addr,
                admin = %running.admin_addr,
                data = %data_dir.display(),
                "streamfabric broker serving"
            );
            shutdown_signal().await;
            tracing::info!("stopping: no new connections; finishing the requests in flight");
            // Three stages of at most 12 s each: within the broker pods' 60 s grace period.
            running.shutdown(std::time::Duration::from_secs(12)).await;
            tracing::info!("shut down");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamfabric-broker: cannot start with data directory {}: {e}", data_dir.display());
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
