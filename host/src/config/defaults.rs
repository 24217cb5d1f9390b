//! `switchboard config defaults`: a complete config file, every key at its default with the
//! README's description above it, so the two can never disagree. Keys without a default
//! (unset, required) are shown commented out.
//!
//! The README's configuration tables are the one description of every key: each heading
//! that names a section in brackets (`[server]`) is followed by tables whose rows start with
//! the key in backticks, then its default.

use std::fmt::Write as _;

use super::Config;

const README: &str = include_str!("../../../README.md");

/// One documented key: its section (`server`, `endpoints`), name, default cell, description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Documented {
    pub section: String,
    pub key: String,
    pub default: String,
    pub description: String,
}

/// Every key the README's configuration tables document, in the README's order.
pub(super) fn documented() -> Vec<Documented> {
    let mut keys = Vec::new();
    let mut section: Option<String> = None;
    for line in README.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            section = heading
                .split('`')
                .nth(1)
                .filter(|name| name.starts_with('['))
                .map(|name| name.trim_matches(|c| c == '[' || c == ']').to_owned());
            continue;
        }
        if line.starts_with("## ") {
            section = None;
            continue;
        }
        let Some(section) = &section else { continue };
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(first) = cells.first().and_then(|c| c.strip_prefix("| `")) else {
            continue;
        };
        if cells.len() < 3 {
            continue;
        }
        let description = plain(cells[2..].join(" | ").trim_end_matches(" |"));
        let default = plain(cells[1]);
        // One row may document several keys: `| `a`, `b` | ...`.
        for key in format!("`{first}").split(", ") {
            let key = key.trim_matches('`');
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.push(Documented {
                    section: section.clone(),
                    key: key.to_owned(),
                    default: default.clone(),
                    description: description.clone(),
                });
            }
        }
    }
    keys
}

/// Markdown cell text as plain text: links keep their words.
fn plain(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    let mut rest = cell.trim();
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        match after.find("](").and_then(|close| {
            let end = after[close..].find(')')? + close;
            Some((close, end))
        }) {
            Some((close, end)) => {
                out.push_str(&rest[..open]);
                out.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The complete commented file.
pub fn render() -> String {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let documented = documented();
    let mut out = String::from(
        "# Switchboard configuration: every key at its default, described as in the README.\n\
         # Commented-out keys have no default. Check a file with `switchboard config check FILE`.\n",
    );
    let mut sections: Vec<&str> = Vec::new();
    for d in &documented {
        if !sections.contains(&d.section.as_str()) {
            sections.push(&d.section);
        }
    }
    for section in sections {
        let list = matches!(defaults.get(section), Some(toml::Value::Array(_)) | None);
        let values = defaults.get(section).and_then(toml::Value::as_table);
        out.push('\n');
        if list {
            let _ = writeln!(
                out,
                "# A list: repeat the [[{section}]] table for each entry. Empty by default."
            );
            let _ = writeln!(out, "# [[{section}]]");
        } else {
            let _ = writeln!(out, "[{section}]");
        }
        for d in documented.iter().filter(|d| d.section == section) {
            let _ = writeln!(out, "# {}", d.description);
            match values.and_then(|t| t.get(&d.key)) {
                Some(value) if !list => {
                    let _ = writeln!(out, "{} = {}", d.key, show(value));
                }
                _ => {
                    let _ = writeln!(out, "# {} = ({})", d.key, d.default);
                }
            }
        }
    }
    out
}

/// A value as it would be written in the file.
fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(t) if t.is_empty() => "{}".to_owned(),
        toml::Value::Table(t) => {
            let inner: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{k} = {}", show(v)))
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of the config, as serialized at its default, has a README row.
    #[test]
    fn every_key_with_a_default_is_documented() {
        let documented = documented();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let mut missing = Vec::new();
        for (section, value) in &defaults {
            let Some(table) = value.as_table() else {
                continue;
            };
            for (key, value) in table {
                // `auth.providers`: documented by its own heading.
                if value.is_table() {
                    continue;
                }
                if !documented
                    .iter()
                    .any(|d| &d.section == section && &d.key == key)
                {
                    missing.push(format!("{section}.{key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from the README's tables: {missing:?}"
        );
    }

    /// Every README row names a real key (a wrong type is refused, an unknown key differently).
    #[test]
    fn every_documented_key_exists() {
        let documented = documented();
        assert!(
            documented.len() > 80,
            "{} keys found in the README",
            documented.len()
        );
        for d in documented {
            let text = match d.section.as_str() {
                "endpoints" | "ingest" => format!("[[{}]]\n{} = {{}}\n", d.section, d.key),
                section => format!("[{section}]\n{} = {{}}\n", d.key),
            };
            let error = Config::parse(&text, [])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                !error.contains("unknown field"),
                "README documents {}.{}, which is not a key: {error}",
                d.section,
                d.key
            );
        }
    }

    /// The file loads, and gives exactly the defaults.
    #[test]
    fn the_defaults_file_loads_as_the_defaults() {
        let text = render();
        let config = Config::parse(&text, []).unwrap();
        assert_eq!(
            toml::Table::try_from(&config).unwrap(),
            toml::Table::try_from(Config::default()).unwrap()
        );
        for section in ["server", "auth", "api", "plugins", "cluster"] {
            assert!(
                text.contains(&format!("\n[{section}]\n")),
                "{section} missing:\n{text}"
            );
        }
        assert!(text.contains("\nlisten = \"127.0.0.1:48080\"\n"), "{text}");
    }
}
