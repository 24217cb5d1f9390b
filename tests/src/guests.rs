//! Building the example plugins (`plugins/`) and the test guests (`tests/guests/`) from source
//! for `wasm32-wasip2`, once per test process.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
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

/// Builds the workspace at `manifest` for wasm32-wasip2 in release mode, with extra env vars,
/// into `target_dir`; returns the `*.wasm` files it produced by crate name (dashes kept).
pub fn build_workspace(
    manifest: &Path,
    target_dir: &Path,
    env: &[(&str, &str)],
    package: Option<&str>,
) -> HashMap<String, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(manifest)
    .env("CARGO_TARGET_DIR", target_dir)
    // Flags meant for the host build must not leak into the guest build.
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("CARGO_BUILD_TARGET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(package) = package {
        cmd.args(["--package", package]);
    }
    let status = cmd.status().expect("running cargo for the guests");
    assert!(
        status.success(),
        "building guests in {} failed",
        manifest.display()
    );
    let out = target_dir.join("wasm32-wasip2").join("release");
    std::fs::read_dir(&out)
        .expect("guest output dir")
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "wasm").then(|| {
                let name = path.file_stem()?.to_str()?.replace('_', "-");
                Some((name, path))
            })?
        })
        .collect()
}

/// The example plugins and the test guests, by name (e.g. `echo`, `demo-chat`, `fault-loop`).
pub fn all() -> &'static HashMap<String, PathBuf> {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = repo_root();
        let target = guest_target_dir();
        let mut all = build_workspace(
            &root.join("plugins/Cargo.toml"),
            &target.join("plugins"),
            &[],
            None,
        );
        all.extend(build_workspace(
            &root.join("tests/guests/Cargo.toml"),
            &target.join("test-guests"),
            &[],
            None,
        ));
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

/// The `versioned` test guest built to answer `version` with `version`.
pub fn versioned(version: &str) -> Vec<u8> {
    static CACHE: OnceLock<std::sync::Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(bytes) = cache.lock().unwrap().get(version) {
        return bytes.clone();
    }
    all();
    let root = repo_root();
    // A target dir per version, so the builds do not invalidate each other.
    let target = guest_target_dir().join(format!("versioned-{version}"));
    let built = build_workspace(
        &root.join("tests/guests/Cargo.toml"),
        &target,
        &[("SWITCHBOARD_TEST_VERSION", version)],
        Some("versioned"),
    );
    let bytes = std::fs::read(&built["versioned"]).expect("versioned guest");
    cache
        .lock()
        .unwrap()
        .insert(version.to_owned(), bytes.clone());
    bytes
}
