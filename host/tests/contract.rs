//! A released version of the plugin contract is never edited: a change is a new version
//! beside it (`guest-sdk/wit/<version>/`). Every file of every released version is pinned
//! here by its SHA-256, so an edit fails this test instead of silently breaking the plugins
//! built against that version. Releasing a version means adding its files here.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// (file under `guest-sdk/wit`, SHA-256 hex) for every released file.
const RELEASED: &[(&str, &str)] = &[
    (
        "0.1.0/plugin.wit",
        "0b794786ba89df977e98a79bd9a37a7f6e03f8e02ab43538e9c529089c4767ff",
    ),
    (
        "0.2.0/plugin.wit",
        "ff9ca1220c0a8774f54227e67cedecc7b090aead9deb3e71fd9e40e3ca52df5e",
    ),
    (
        "0.2.0/deps/keyvalue/atomic.wit",
        "089f3dd1e37ec227c8822fcc6a9307312a75cd0b873232fc5053789095bf48cc",
    ),
    (
        "0.2.0/deps/keyvalue/batch.wit",
        "142fd416fda166980c64335c1989f02446eedf2d6a71c35d5724a0cb90e6d4b2",
    ),
    (
        "0.2.0/deps/keyvalue/store.wit",
        "f2c675a6bd298d181a6a4c71afe0e78402926621136cffa9f9f058acff007641",
    ),
    (
        "0.2.0/deps/keyvalue/watch.wit",
        "28c53f23a82afbd939001255b3ed2a493558fd6de0bc8acdbe223b645934639d",
    ),
    (
        "0.2.0/deps/keyvalue/world.wit",
        "ff5507badffebc726b207278234f5d0102f32c8e4d38f2be8d32e72a9f9da839",
    ),
];

fn wit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/wit")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn released_contract_files_are_unchanged() {
    for (file, pinned) in RELEASED {
        let bytes = std::fs::read(wit_dir().join(file)).unwrap_or_else(|e| {
            panic!("guest-sdk/wit/{file}: {e}; a released contract file may not be removed")
        });
        let digest = hex::encode(Sha256::digest(&bytes));
        assert_eq!(
            &digest, pinned,
            "guest-sdk/wit/{file} was edited. A released contract is never changed: put the \
             change in a new version folder beside it"
        );
    }
}

#[test]
fn no_file_is_added_to_a_released_version() {
    let mut found = Vec::new();
    files(&wit_dir(), &mut found);
    let released_versions: Vec<&str> = RELEASED
        .iter()
        .map(|(f, _)| f.split('/').next().unwrap())
        .collect();
    for path in found {
        let relative = path
            .strip_prefix(wit_dir())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let version = relative.split('/').next().unwrap();
        if released_versions.contains(&version) {
            assert!(
                RELEASED.iter().any(|(f, _)| *f == relative),
                "guest-sdk/wit/{relative} was added to released version {version}: put it in a \
                 new version folder"
            );
        }
    }
}
