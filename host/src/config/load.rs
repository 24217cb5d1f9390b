//! Reading a config — the file, then the environment's overrides, then the range and
//! consistency checks — and `config check`, which reports every problem instead of the first.
//!
//! Each problem names where it is: the file and line (found from the error's span, or from
//! the key a check names), or the environment variable. To look past a problem, the check sets
//! its line aside (commented out, so the key takes its default; a `[section]` header with
//! the lines under it) or drops its variable, and reads again.

use std::{collections::HashMap, fmt};

use serde::Deserialize as _;

use super::{Config, Invalid, env};

/// Where the README lists every key, appended to errors about the file's shape.
const FIX: &str = "(README.md, \"Configuration\", lists every key with its type and range)";

/// Most problems one check reports; a file with more is not worth reading further.
const MAX_PROBLEMS: usize = 100;

/// One problem, and what to set aside to look for the next.
#[derive(Debug)]
pub(super) struct Problem {
    /// The whole message: origin (file and line, or variable), key, what is wrong, the fix.
    message: String,
    aside: Aside,
}

/// What a problem lets the check set aside.
#[derive(Debug)]
enum Aside {
    /// A line of the file (1-based).
    Line(usize),
    /// An environment variable.
    Var(String),
    /// Nothing: the problem is not tied to one line or variable.
    Nothing,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Parses `text` (named `source` in messages) with the overrides in `env`, and checks it.
pub(super) fn parse(text: &str, source: &str, env: &[(String, String)]) -> Result<Config, Problem> {
    // The file alone first, so its errors carry a line number.
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| toml_problem(text, source, &e))?;
    toml::from_str::<Config>(text).map_err(|e| toml_problem(text, source, &e))?;
    let mut from_env: HashMap<String, String> = HashMap::new();
    for (name, value) in env {
        let var_problem = |e: anyhow::Error| Problem {
            message: format!("{e:#}"),
            aside: Aside::Var(name.clone()),
        };
        if let Some(o) = env::read(name, value).map_err(var_problem)? {
            from_env.insert(o.dotted(), o.var.clone());
            o.apply(&mut table).map_err(var_problem)?;
        }
    }
    let config = Config::deserialize(toml::Value::Table(table)).map_err(|e| Problem {
        message: format!("{source} with environment overrides: {e}"),
        aside: Aside::Nothing,
    })?;
    config.validate().map_err(|e| {
        let Some(invalid) = e.downcast_ref::<Invalid>() else {
            // Other checks start their message with the key (`plugins.fuel = 0 is ...`).
            let message = format!("{e:#}");
            let key = message.split([' ', ':']).next().unwrap_or_default();
            return match line_of(text, key) {
                Some(line) => Problem {
                    message: format!("{source}:{line}: {message}"),
                    aside: Aside::Line(line),
                },
                None => Problem {
                    message: format!("{source}: {message}"),
                    aside: Aside::Nothing,
                },
            };
        };
        let var = from_env
            .iter()
            .find(|(key, _)| invalid.key == **key || invalid.key.starts_with(&format!("{key}[")));
        if let Some((_, var)) = var {
            return Problem {
                message: format!("{var}: {invalid}"),
                aside: Aside::Var(var.clone()),
            };
        }
        match line_of(text, &invalid.key) {
            Some(line) => Problem {
                message: format!("{source}:{line}: {invalid}"),
                aside: Aside::Line(line),
            },
            None => Problem {
                message: format!("{source}: {invalid}"),
                aside: Aside::Nothing,
            },
        }
    })?;
    Ok(config)
}

/// Every problem of `text` with `env`, each once, in the order found; empty when it loads.
pub(super) fn check_all(text: &str, source: &str, mut env: Vec<(String, String)>) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut problems: Vec<String> = Vec::new();
    while problems.len() < MAX_PROBLEMS {
        let Err(problem) = parse(&lines.join("\n"), source, &env) else {
            return problems;
        };
        let set_aside = match &problem.aside {
            Aside::Line(line) => comment_out(&mut lines, *line),
            Aside::Var(var) => {
                let before = env.len();
                env.retain(|(name, _)| name != var);
                env.len() != before
            }
            Aside::Nothing => false,
        };
        let repeated = problems.contains(&problem.message);
        if !repeated {
            problems.push(problem.message);
        }
        if !set_aside || repeated {
            problems.push(format!(
                "{source}: checking stopped at the problem above; fix it and check again"
            ));
            return problems;
        }
    }
    problems.push(format!(
        "{source}: checking stopped after {MAX_PROBLEMS} problems"
    ));
    problems
}

/// A TOML error in the file: `FILE:LINE: KEY: message (fix)`, the key found from its span.
fn toml_problem(text: &str, source: &str, e: &toml::de::Error) -> Problem {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return Problem {
            message: format!("{source}: {message} {FIX}"),
            aside: Aside::Nothing,
        };
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let message = match key_at(text, start) {
        Some(key) => format!("{source}:{line}: {key}: {message} {FIX}"),
        None => format!("{source}:{line}: {message} {FIX}"),
    };
    Problem {
        message,
        aside: Aside::Line(line),
    }
}

/// The line (1-based) that sets the dotted `key`, or its `[section]` header.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for (index, line) in text.split('\n').enumerate() {
        let trimmed = line.trim();
        if !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && key_at(text, offset).as_deref() == Some(key)
        {
            return Some(index + 1);
        }
        offset += line.len() + 1;
    }
    None
}

/// Comments out line `line` (1-based): a `[section]` header with the lines under it, or a
/// setting with the lines its value continues on. False when there was nothing to set aside.
fn comment_out(lines: &mut [String], line: usize) -> bool {
    let Some(first) = line.checked_sub(1).filter(|&i| i < lines.len()) else {
        return false;
    };
    if lines[first].trim_start().starts_with('#') {
        return false;
    }
    let header = lines[first].trim_start().starts_with('[');
    let mut depth = 0i64;
    for (i, l) in lines.iter_mut().enumerate().skip(first) {
        let trimmed = l.trim_start();
        if i > first {
            let continues = if header {
                !trimmed.starts_with('[')
            } else {
                depth > 0
            };
            if !continues {
                break;
            }
        }
        if !header {
            depth += bracket_depth_change(trimmed);
        }
        *l = format!("# {l}");
    }
    true
}

/// How many brackets a line opens, less how many it closes, outside strings and comments.
fn bracket_depth_change(line: &str) -> i64 {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in line.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                '#' => break,
                _ => {}
            },
        }
    }
    depth
}

/// The dotted key of the setting at byte `offset`: the `[section]` (or `[[array]]` entry) the
/// line is in, and the key the line sets.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    let header = |l: &str| {
        let l = l.trim();
        let inner = l
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
            .map(|name| (name.trim().to_owned(), true))
            .or_else(|| {
                l.strip_prefix('[')
                    .and_then(|r| r.split(']').next())
                    .map(|name| (name.trim().to_owned(), false))
            })?;
        Some(inner)
    };
    if let Some((name, _)) = header(line) {
        return Some(name);
    }
    let key = line.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    let headers: Vec<(String, bool)> = text[..line_start].lines().filter_map(header).collect();
    let section = headers.last().map(|(name, array)| {
        let index = headers.iter().filter(|h| h.1 && h.0 == *name).count();
        (name.clone(), *array, index.saturating_sub(1))
    });
    Some(match section {
        Some((name, true, index)) => format!("{name}[{index}].{key}"),
        Some((name, false, _)) => format!("{name}.{key}"),
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        check_all(text, "f.toml", Vec::new())
    }

    #[test]
    fn every_problem_of_a_file_is_reported_with_its_line() {
        let problems = check(
            "[server]\nmax_connections = 0\nlisen = \"x\"\nlisten = 127.0.0.1:1\n\
             outbound_queue = 0\n[servr]\na = 1\n[plugins]\ncall_timeout_ms = 0\n",
        );
        let expected = [
            "f.toml:4: server.listen:",
            "f.toml:3: server.lisen:",
            "f.toml:6: servr:",
            "f.toml:2: server.max_connections: 0 is out of range",
            "f.toml:5: server.outbound_queue: 0 is out of range",
            "f.toml:9: plugins.call_timeout_ms = 0 is out of range",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, start) in problems.iter().zip(expected) {
            assert!(
                problem.starts_with(start),
                "{problem} should start with {start}"
            );
        }
    }

    #[test]
    fn a_good_file_has_no_problem() {
        assert!(check("[server]\nlisten = \"127.0.0.1:0\"\n").is_empty());
        assert!(check("").is_empty());
    }

    #[test]
    fn a_bad_variable_is_named_and_the_file_still_checked() {
        let problems = check_all(
            "[server]\noutbound_queue = 0\n",
            "f.toml",
            vec![("SWITCHBOARD_SERVER__MAX_CONNECTIONS".into(), "0".into())],
        );
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with("SWITCHBOARD_SERVER__MAX_CONNECTIONS: server.max_connections"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("f.toml:2: server.outbound_queue"),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_multi_line_value_is_set_aside_whole() {
        let problems = check("[api]\nkeys = [\n  \"a\",\n  1,\n]\n[server]\noutbound_queue = 0\n");
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[1].starts_with("f.toml:7: server.outbound_queue"),
            "{problems:#?}"
        );
    }
}
