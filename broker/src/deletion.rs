//! The end of a DeleteStream: the stream's objects leave the bucket, then the stream leaves
//! the catalog. Until then it stays DELETING (as in AWS), so CreateStream of its name is
//! refused and a new stream of that name never meets the old one's objects.

use crate::archive::Archive;
use crate::catalog::Catalog;
use crate::catalog::meta::StreamStatus;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

pub struct Deletions {
    catalog: Arc<Catalog>,
    archive: Archive,
    /// Streams being deleted now: one deletion per stream at a time.
    running: Mutex<HashSet<String>>,
    tasks: Mutex<JoinSet<()>>,
    /// Set when the broker stops: nothing is deleted after that (the next start finishes it).
    stopped: AtomicBool,
}

impl Deletions {
    pub fn new(catalog: Arc<Catalog>, archive: Archive) -> Arc<Self> {
        Arc::new(Deletions {
            catalog,
            archive,
            running: Mutex::new(HashSet::new()),
            tasks: Mutex::new(JoinSet::new()),
            stopped: AtomicBool::new(false),
        })
    }

    /// Start no deletion from now on and wait for those running: a stopped broker leaves its
    /// data directory and its objects alone (another process may be opening them already).
    pub async fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let running = std::mem::take(&mut *self.tasks.lock().unwrap());
        running.join_all().await;
    }

    /// Finish the deletion of every DELETING stream (by the catalog's writer: after a
    /// restart, a store outage, or a coordinator that stopped midway).
    pub fn finish_all(self: &Arc<Self>) {
        for stream in self.catalog.all() {
            if stream.status() == StreamStatus::Deleting {
                self.finish(&stream.name, stream.incarnation);
            }
        }
    }

    /// Delete the objects of this incarnation of `name`, then forget it; in the background.
    /// A store that refuses leaves it DELETING, to be finished by a later `finish_all`.
    pub fn finish(self: &Arc<Self>, name: &str, incarnation: u64) {
        let mut tasks = self.tasks.lock().unwrap();
        if self.stopped.load(Ordering::SeqCst) || !self.running.lock().unwrap().insert(name.to_string()) {
            return;
        }
        while tasks.try_join_next().is_some() {}
        let this = self.clone();
        let name = name.to_string();
        tasks.spawn(async move {
            this.delete(&name, incarnation).await;
            this.running.lock().unwrap().remove(&name);
        });
    }

    pub(crate) async fn delete(&self, name: &str, incarnation: u64) {
        let still_deleting = || {
            self.catalog.get(name).is_some_and(|s| s.incarnation == incarnation && s.status() == StreamStatus::Deleting)
        };
        if !still_deleting() {
            return;
        }
        match self.archive.purge(name).await {
            Ok(objects) => tracing::info!(stream = %name, objects, "deleted; its objects left the object store"),
            Err(e) => {
                tracing::warn!(stream = %name, "deleting the stream's objects failed; it stays DELETING and is retried: {e}");
                return;
            }
        }
        if !still_deleting() {
            return;
        }
        let catalog = self.catalog.clone();
        let owned = name.to_string();
        match tokio::task::spawn_blocking(move || catalog.remove(&owned)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(stream = %name, "deleting the stream's files: {e}"),
            Err(e) => tracing::error!(stream = %name, "deleting the stream's files: {e}"),
        }
    }
}
