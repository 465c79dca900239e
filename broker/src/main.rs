use clap::{Parser, Subcommand};
use streamfabric_broker::BrokerConfig;

// Every request allocates per record (keys, data, answers) from many threads; mimalloc's
// thread-local free lists cost a fraction of glibc malloc's here (see the issue note's profile).
// Built without transparent huge pages (feature `no_thp`): with them, each purge-and-reuse of
// a little freed memory faulted in and zeroed a whole 2 MiB page (a tenth of the put path's CPU).
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

/// mimalloc's purge delay (its option index 15 in v3's `mi_option_e`; libmimalloc-sys names
/// no constant for it).
const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;

/// How mimalloc gives freed memory back. Its default, holding freed memory 1 s before
/// returning it, kept the broker's peak near 500 MB through 1 KiB puts and drains with
/// 8 GB stored; 100 ms takes about 50 MB off the peak for 2-3% more CPU (10 ms: 20% more).
/// And it returns memory only when some thread allocates after the delay, so a broker gone
/// quiet after a burst (a drain's 10 MiB answers) would keep its peak: a thread of its own
/// collects every second. `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn return_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a number read by the allocator; no pointers involved.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
    }
    let collector = std::thread::Builder::new().name("memory-collector".into()).spawn(|| {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: takes no pointers; returns to the OS only memory mimalloc holds free.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
    if let Err(e) = collector {
        eprintln!("streamfabric-broker: no memory collector thread ({e}); freed memory is returned later");
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    return_freed_memory();
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

#[cfg(test)]
mod tests {
    use libmimalloc_sys::mi_option_get;

    #[test]
    fn the_purge_delay_is_set_at_start() {
        // v3's default purge delay is 1000 ms, and no other option of v3 defaults to it: so
        // option 15 is the purge delay.
        assert_eq!(unsafe { mi_option_get(super::MI_OPTION_PURGE_DELAY) }, 1000);
        super::return_freed_memory();
        assert_eq!(unsafe { mi_option_get(super::MI_OPTION_PURGE_DELAY) }, 100);
    }
}
