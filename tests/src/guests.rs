//! The guest components the tests load: the example plugins (`plugins/`), the test guests
//! (`tests/guests/`) and the other languages' examples, built from source for `wasm32-wasip2`
//! by `scripts/build-guests.sh` before the tests run. Tests read them and never build.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where guest builds go: `$SWITCHBOARD_GUEST_TARGET_DIR`, else `<repo>/target/guests`.
pub fn guest_target_dir() -> PathBuf {
    std::env::var_os("SWITCHBOARD_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("guests"))
}

/// The `*.wasm` files a guest workspace's release build left in `target_dir`, by crate name
/// (dashes kept).
fn built_in(target_dir: &Path) -> HashMap<String, PathBuf> {
    let out = target_dir.join("wasm32-wasip2").join("release");
    let entries = std::fs::read_dir(&out).unwrap_or_else(|e| {
        panic!(
            "no built guests in {} ({e}): run scripts/build-guests.sh first (scripts/test.sh does)",
            out.display()
        )
    });
    entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "wasm").then(|| {
                let name = path.file_stem()?.to_str()?.replace('_', "-");
                Some((name, path))
            })?
        })
        .collect()
}

/// The example plugins and the test guests, by name (e.g. `echo`, `demo-chat`, `fault-loop`),
/// as `scripts/build-guests.sh` built them.
pub fn all() -> &'static HashMap<String, PathBuf> {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = guest_target_dir();
        let mut all = built_in(&target.join("plugins"));
        all.extend(built_in(&target.join("test-guests")));
        all
    })
}

/// One built component by name.
pub fn path(name: &str) -> PathBuf {
    all()
        .get(name)
        .unwrap_or_else(|| panic!("no guest named {name}; built: {:?}", all().keys()))
        .clone()
}

/// The `versioned` test guest built to answer `version` with `version` (1 or 2).
pub fn versioned(version: &str) -> Vec<u8> {
    let built = built_in(&guest_target_dir().join(format!("versioned-{version}")));
    std::fs::read(&built["versioned"]).expect("versioned guest")
}

/// A component `scripts/build-guests.sh` built outside the Rust workspaces, by its path under
/// the guest target folder (e.g. `polyglot-dist/js-greet.wasm`).
pub fn prebuilt(relative: &str) -> Vec<u8> {
    let path = guest_target_dir().join(relative);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} ({e}): run scripts/build-guests.sh first (scripts/test.sh does)",
            path.display()
        )
    })
}
