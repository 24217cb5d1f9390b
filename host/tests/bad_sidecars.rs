//! Golden operator input: every `bad_sidecars/NAME.toml` must be refused with exactly the error
//! in `NAME.err` (the folder written as `$DIR`), never a panic. Adding a case is adding two
//! files; `SWITCHBOARD_BLESS=1 cargo test -p switchboard --test bad_sidecars` rewrites the
//! `.err` files from what the host says now (review the diff).

use std::path::{Path, PathBuf};

use switchboard::plugins::sidecar::Sidecar;

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_sidecars")
}

#[test]
fn every_bad_sidecar_is_refused_with_its_golden_error() {
    let dir = folder();
    let bless = std::env::var_os("SWITCHBOARD_BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "cases: {cases:?}");
    let mut mismatches = Vec::new();
    for case in &cases {
        let outcome = std::panic::catch_unwind(|| Sidecar::load(case));
        let error = match outcome {
            Err(_) => panic!("{} panicked", case.display()),
            Ok(Ok(_)) => panic!("{} was accepted", case.display()),
            Ok(Err(e)) => format!("{e:#}").replace(&dir.display().to_string(), "$DIR"),
        };
        // A clear error names the file and never quotes the file's lines.
        assert!(error.starts_with("sidecar $DIR/"), "{error}");
        assert!(
            !error.contains('\n'),
            "one line, no source excerpt: {error}"
        );
        let golden = case.with_extension("err");
        if bless {
            std::fs::write(&golden, format!("{error}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("{} has no .err file", case.display()));
        if expected.trim_end() != error {
            mismatches.push(format!(
                "{}:\n  expected: {}\n  got:      {error}",
                case.display(),
                expected.trim_end()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn the_readme_sidecar_example_is_accepted() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let from = readme
        .find("An optional sidecar")
        .expect("the sidecar section");
    let block = &readme[from..];
    let start = block.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + block[start..].find("```").unwrap();
    let sidecar = Sidecar::parse(&block[start..end]).expect("the README's example parses");
    assert_eq!(sidecar.limits.fuel, Some(100_000_000));
}

#[test]
fn a_symlinked_sidecar_is_refused_without_reading_it() {
    let dir = tempfile_dir();
    let secret = dir.join("secret.txt");
    std::fs::write(&secret, "root:x:0:0 top secret line\n").unwrap();
    let link = dir.join("p.toml");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let error = format!("{:#}", Sidecar::load(&link).unwrap_err());
    assert!(error.contains("symbolic link"), "{error}");
    assert!(!error.contains("secret"), "{error}");
    // A regular file holding text that is not TOML is not quoted either.
    std::fs::remove_file(&link).unwrap();
    std::fs::copy(&secret, &link).unwrap();
    let error = format!("{:#}", Sidecar::load(&link).unwrap_err());
    assert!(error.contains("line 1, column"), "{error}");
    assert!(
        !error.contains("secret") && !error.contains("root:x"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
