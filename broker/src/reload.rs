//! Files the broker re-reads while it runs (credentials, the access policy, the TLS
//! certificate): a mounted Secret or ConfigMap changes under it, and a restart is not needed.

use std::sync::Arc;
use std::time::Duration;

/// How often such files are looked at for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Call `reload` every `RELOAD_EVERY` (off the runtime's threads: it reads files) for as
/// long as `target` lives.
pub fn every_few_seconds<T: Send + Sync + 'static>(target: &Arc<T>, reload: fn(&T)) {
    let target = Arc::downgrade(target);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let Some(target) = target.upgrade() else { return };
            tokio::task::spawn_blocking(move || reload(&target)).await.ok();
        }
    });
}
