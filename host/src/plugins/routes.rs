//! The route table: message type → plugin. Immutable; a reload builds a new table and swaps
//! it in atomically, so in-flight calls finish on the version they started with.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use anyhow::bail;

use super::loaded::LoadedPlugin;

/// Plugins by key and by claimed message type.
#[derive(Default)]
pub(crate) struct RouteTable {
    /// Loaded plugins by key (file stem).
    pub plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    /// The plugin that claimed each type.
    pub by_type: HashMap<String, Arc<LoadedPlugin>>,
    /// Plugins that asked for on-connect/on-disconnect, in key order.
    pub lifecycle: Arc<Vec<Arc<LoadedPlugin>>>,
}

impl RouteTable {
    fn from_plugins(plugins: BTreeMap<String, Arc<LoadedPlugin>>) -> Self {
        let by_type = plugins
            .values()
            .flat_map(|p| {
                p.info
                    .message_types
                    .iter()
                    .map(move |t| (t.clone(), p.clone()))
            })
            .collect();
        let lifecycle = plugins
            .values()
            .filter(|p| p.info.lifecycle_events)
            .cloned()
            .collect();
        Self {
            plugins,
            by_type,
            lifecycle: Arc::new(lifecycle),
        }
    }

    /// This table with `plugin` added or replacing its previous version. A type claimed by
    /// another plugin is an error for the newcomer, never a silent override.
    pub(crate) fn with(&self, plugin: Arc<LoadedPlugin>) -> anyhow::Result<Self> {
        for t in &plugin.info.message_types {
            if let Some(owner) = self.by_type.get(t)
                && owner.key != plugin.key
            {
                bail!(
                    "message type {t:?} is already claimed by plugin {} ({})",
                    owner.label(),
                    owner.file.display()
                );
            }
        }
        let mut plugins = self.plugins.clone();
        plugins.insert(plugin.key.clone(), plugin);
        Ok(Self::from_plugins(plugins))
    }

    /// This table without plugin `key`.
    pub(crate) fn without(&self, key: &str) -> Self {
        let mut plugins = self.plugins.clone();
        plugins.remove(key);
        Self::from_plugins(plugins)
    }
}
