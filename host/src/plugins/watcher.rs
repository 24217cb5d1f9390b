//! Watches the plugins folder and turns file changes into reloads. Changes are debounced, so
//! a file being copied is read once it is complete.

use std::{collections::BTreeSet, path::Path, sync::Weak, time::Duration};

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use super::PluginHost;

/// Batches of changes waiting to be applied; a full queue makes the watcher thread wait.
const PENDING_BATCHES: usize = 64;

/// Stops watching when dropped.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl Watcher {
    /// Watches `dir` (not recursively) and reloads the affected plugins of `host`.
    pub fn start(dir: &Path, debounce_ms: u64, host: Weak<PluginHost>) -> anyhow::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<BTreeSet<String>>(PENDING_BATCHES);
        let watched = dir.canonicalize()?;
        let filter_dir = watched.clone();
        let mut debouncer = new_debouncer(
            Duration::from_millis(debounce_ms),
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let keys: BTreeSet<String> = events
                        .iter()
                        .flat_map(|e| e.paths.iter())
                        .filter_map(|p| plugin_key(&filter_dir, p))
                        .collect();
                    if !keys.is_empty() {
                        let _ = tx.blocking_send(keys);
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "plugin folder watch error");
                    }
                }
            },
        )?;
        debouncer.watch(&watched, RecursiveMode::NonRecursive)?;
        tokio::spawn(async move {
            while let Some(keys) = rx.recv().await {
                let Some(host) = host.upgrade() else { return };
                // Event paths are hints: a rename followed by a delete may be reported under
                // the file's old name, so every change reconciles the whole folder.
                tracing::debug!(?keys, "plugin folder changed");
                host.reconcile().await;
            }
        });
        Ok(Self {
            _debouncer: debouncer,
        })
    }
}

/// The name of a changed entry directly inside `dir`.
fn plugin_key(dir: &Path, path: &Path) -> Option<String> {
    let parent = path.parent()?;
    if parent != dir && parent.canonicalize().ok()?.as_path() != dir {
        return None;
    }
    path.file_name()?.to_str().map(str::to_owned)
}
