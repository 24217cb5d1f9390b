//! Watches the plugins folder and turns file changes into reloads. Changes are debounced, so
//! a file being copied is read once it is complete. Only changes count: the host reads the
//! files it watches, and inotify reports those reads (open, close) too; reacting to them would
//! make every reload trigger the next.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{Arc, Weak},
    time::Duration,
};

use notify::{
    EventKind, RecursiveMode,
    event::{MetadataKind, ModifyKind},
};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::{Semaphore, mpsc};

use super::{Alive, PluginHost};

/// Batches of changes waiting to be applied; a full queue makes the watcher thread wait.
const PENDING_BATCHES: usize = 64;

/// Reconciles running at once; a further batch waits for one to end. Each plugin still loads
/// one version at a time (see `PluginHost::prepare`).
const RECONCILES_IN_FLIGHT: usize = 4;

/// Stops watching when dropped.
pub(super) struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl Watcher {
    /// Watches `dir` (not recursively) and reloads the affected plugins of `host`.
    pub(super) fn start(
        dir: &Path,
        debounce_ms: u64,
        host: Weak<PluginHost>,
        alive: Alive,
    ) -> anyhow::Result<Self> {
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
                        .filter(|e| is_change(&e.kind))
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
            let _alive = alive;
            let running = Arc::new(Semaphore::new(RECONCILES_IN_FLIGHT));
            while let Some(keys) = rx.recv().await {
                let Some(host) = host.upgrade() else { return };
                let Ok(permit) = running.clone().acquire_owned().await else {
                    return;
                };
                // Event paths are hints: a rename followed by a delete may be reported under
                // the file's old name, so every change reconciles the whole folder. Each in a
                // task of its own: a slow load (a compile, a `describe` that waits until its
                // deadline) must not hold back the changes that follow.
                tracing::debug!(?keys, "plugin folder changed");
                tokio::spawn(async move {
                    host.reconcile().await;
                    drop(permit);
                });
            }
        });
        Ok(Self {
            _debouncer: debouncer,
        })
    }
}

/// Whether an event changed a file: created, written, renamed, removed, or its permissions
/// changed. Reads (open, close without writing, access times) are not changes.
fn is_change(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
    )
}

/// The name of a changed plugin or sidecar directly inside `dir` (`NAME.wasm`, `NAME.toml`;
/// not hidden files, e.g. the code cache or a file being copied in).
fn plugin_key(dir: &Path, path: &Path) -> Option<String> {
    let parent = path.parent()?;
    if parent != dir && parent.canonicalize().ok()?.as_path() != dir {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let relevant = !name.starts_with('.') && (name.ends_with(".wasm") || name.ends_with(".toml"));
    relevant.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange};

    use super::*;

    #[test]
    fn reads_are_not_changes_and_only_plugin_files_count() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        let dir = Path::new("/p");
        assert_eq!(
            plugin_key(dir, Path::new("/p/a.wasm")).as_deref(),
            Some("a.wasm")
        );
        assert_eq!(
            plugin_key(dir, Path::new("/p/a.toml")).as_deref(),
            Some("a.toml")
        );
        assert_eq!(plugin_key(dir, Path::new("/p/.cache")), None);
        assert_eq!(plugin_key(dir, Path::new("/p/.a.wasm.tmp")), None);
        assert_eq!(plugin_key(dir, Path::new("/p/notes.txt")), None);
        assert_eq!(plugin_key(dir, Path::new("/q/a.wasm")), None);
    }
}
