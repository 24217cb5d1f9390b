//! `SWITCHBOARD_<SECTION>__<KEY>` environment overrides.
//!
//! A value is read as the type its key expects: as TOML when that deserializes for the key
//! (numbers, booleans, arrays), else as the plain string. So `SWITCHBOARD_CLUSTER__NODE_ID=1`
//! or an all-digit secret stays a string, while `SWITCHBOARD_SERVER__OUTBOUND_QUEUE=7` is a
//! number. `SWITCHBOARD_ENDPOINTS` and `SWITCHBOARD_INGEST` replace the endpoint and ingest lists
//! with a TOML array of tables.

use anyhow::bail;
use serde::Deserialize as _;

use super::{Config, ENV_PREFIX};

/// One override: where it goes and the variable it came from (for error messages).
#[derive(Debug)]
pub(super) struct Override {
    /// The environment variable, e.g. `SWITCHBOARD_SERVER__LISTEN`.
    pub var: String,
    /// Section (`server`), or `endpoints` / `ingest` for the whole list.
    pub section: String,
    /// Key within the section; `None` for a whole list.
    pub key: Option<String>,
    /// The value, already of the type the key expects.
    pub value: toml::Value,
}

impl Override {
    /// The dotted key it sets, e.g. `server.listen`.
    pub(super) fn dotted(&self) -> String {
        match &self.key {
            Some(key) => format!("{}.{key}", self.section),
            None => self.section.clone(),
        }
    }

    /// Applies it to the file's table.
    pub(super) fn apply(self, table: &mut toml::Table) -> anyhow::Result<()> {
        let Some(key) = self.key else {
            table.insert(self.section, self.value);
            return Ok(());
        };
        let entry = table
            .entry(self.section.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let Some(section_table) = entry.as_table_mut() else {
            bail!(
                "{}: config section `{}` is not a table in the file; remove the file's `{}` value",
                self.var,
                self.section,
                self.section
            );
        };
        section_table.insert(key, self.value);
        Ok(())
    }
}

/// Reads one environment variable; `None` when it is not a config override (e.g.
/// `SWITCHBOARD_LOG`, or another program's variable).
pub(super) fn read(name: &str, value: &str) -> anyhow::Result<Option<Override>> {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(None);
    };
    let (section, key) = if rest == "ENDPOINTS" || rest == "INGEST" {
        (rest.to_ascii_lowercase(), None)
    } else {
        let Some((section, key)) = rest.split_once("__") else {
            return Ok(None);
        };
        (section.to_ascii_lowercase(), Some(key.to_ascii_lowercase()))
    };
    let mut candidates = Vec::with_capacity(2);
    if let Some(typed) = parse_toml_value(value) {
        candidates.push(typed);
    }
    candidates.push(toml::Value::String(value.into()));
    let mut first_error = None;
    for candidate in candidates {
        match fits(&section, key.as_deref(), &candidate) {
            Ok(()) => {
                return Ok(Some(Override {
                    var: name.to_owned(),
                    section,
                    key,
                    value: candidate,
                }));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let dotted = match &key {
        Some(key) => format!("{section}.{key}"),
        None => section,
    };
    let reason = first_error
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    bail!(
        "{name}: {dotted}: {}; fix the variable or unset it",
        reason.trim_end()
    )
}

/// Whether `value` deserializes as the key on its own (other keys at their defaults).
fn fits(section: &str, key: Option<&str>, value: &toml::Value) -> Result<(), toml::de::Error> {
    let mut table = toml::Table::new();
    match key {
        Some(key) => {
            let mut inner = toml::Table::new();
            inner.insert(key.to_owned(), value.clone());
            table.insert(section.to_owned(), toml::Value::Table(inner));
        }
        None => {
            table.insert(section.to_owned(), value.clone());
        }
    }
    Config::deserialize(toml::Value::Table(table)).map(drop)
}

/// The value as TOML, if it is one (`7`, `true`, `["a"]`, `"quoted"`).
fn parse_toml_value(value: &str) -> Option<toml::Value> {
    let doc = format!("v = {value}");
    doc.parse::<toml::Table>().ok()?.remove("v")
}
