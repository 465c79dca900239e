use clap::Parser;
use std::time::Duration;
use streamfabric_sidecar::cli::Args;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STREAMFABRIC_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let settings = args.settings();
    match streamfabric_sidecar::start(settings).await {
        Ok(running) => {
            tracing::info!(
                listen = %running.addr, admin = ?running.admin_addr, brokers = %args.broker_endpoint,
                aggregate = args.aggregate, ack = ?args.ack, consumer = ?args.consumer_application,
                "streamfabric sidecar serving"
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping: no new connections; answering the calls in flight");
            // The records buffered are sent (or refused) before their callers are answered.
            if !running.shutdown(args.record_ttl + Duration::from_secs(1)).await {
                tracing::warn!("calls still in flight at exit");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamfabric-sidecar: cannot start on {}: {e}", args.listen);
            std::process::ExitCode::FAILURE
        }
    }
}
