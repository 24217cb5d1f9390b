//! Compiled code cached on disk, keyed by the component's content hash and the engine's
//! compatibility hash, so a restart (or a reload of an unchanged file) skips compilation.
//! Large components (JS, Python) compile in seconds but load from the cache in milliseconds.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use wasmtime::{Engine, component::Component};

/// Where compiled components are kept.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
    engine_key: String,
}

impl CodeCache {
    /// A cache in `dir` for code compiled by `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    fn path_for(&self, content_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{content_hash}-{}.cwasm", self.engine_key))
    }

    /// The component for `bytes` (whose SHA-256 is `content_hash`): from the cache when
    /// present and loadable, else compiled (logged with `file`, since a large component takes
    /// seconds) and written to the cache.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        content_hash: &str,
        bytes: &[u8],
        file: &str,
    ) -> anyhow::Result<(Component, bool)> {
        let path = self.path_for(content_hash);
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable cache entry")
                }
            }
        }
        tracing::info!(file, bytes = bytes.len(), "compiling plugin");
        let component = compile(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled code cache");
        }
        Ok((component, false))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = component.serialize()?;
        // Write then rename, so a reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Compiles a component from its bytes.
pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .context("not a valid WebAssembly component")
}

#[expect(
    unsafe_code,
    reason = "deserializing native code is only sound for files this host wrote; the cache \
              directory belongs to the operator, like the plugins directory itself"
)]
fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: the file was produced by `Component::serialize` of an engine with the same
    // compatibility hash (it is in the file name), and written atomically by `store`.
    unsafe { Component::deserialize_file(engine, path) }.map_err(anyhow::Error::from)
}
