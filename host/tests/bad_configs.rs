//! Golden bad configurations: each `bad_configs/NAME.toml` (with environment overrides from an
//! optional `NAME.env`, one `VAR=value` a line) must be refused with exactly the error in
//! `NAME.err`. Adding a case is adding two files; `SWITCHBOARD_BLESS=1` rewrites the `.err`
//! files from what the host says now (review the diff).

use std::path::{Path, PathBuf};

use switchboard::config::Config;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new("tests/bad_configs");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/bad_configs exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    cases
}

fn env_of(case: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(case.with_extension("env")) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME.env lines are VAR=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn every_bad_config_is_refused_with_its_golden_error() {
    let bless = std::env::var_os("SWITCHBOARD_BLESS").is_some();
    let cases = cases();
    assert!(cases.len() >= 20, "the suite lost its cases: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let result = std::panic::catch_unwind(|| Config::load(Some(case), env_of(case)));
        let actual = match result {
            Err(_) => {
                failures.push(format!("{}: panicked", case.display()));
                continue;
            }
            Ok(Ok(_)) => {
                failures.push(format!("{}: was accepted", case.display()));
                continue;
            }
            Ok(Err(e)) => format!("{e:#}\n"),
        };
        let golden = case.with_extension("err");
        if bless {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n  expected: {expected:?}\n  actual:   {actual:?}",
                case.display()
            ));
        }
        let name = case.display().to_string();
        if !actual.starts_with(&name) && !actual.starts_with("SWITCHBOARD_") {
            failures.push(format!(
                "{name}: the error names neither the file nor the variable"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
