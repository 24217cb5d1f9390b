//! The modules of `host/src` import each other without cycles: shared types sit below the
//! modules that use them, so each module can be read knowing only what it imports.
//!
//! The graph is read from the source: every `crate::` path (in `use` items and inline), and
//! every `super::` path, outside `#[cfg(test)]` code, counts as an edge from the module that
//! writes it to the deepest module the path names. Checked at two grains: between top-level
//! modules, and between all modules, where a submodule using what its own parent defines is
//! not counted (the parent is the folder's interface; siblings must still not import each
//! other in a circle).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Module path (`plugins::loaded`) of every source file, with its non-test text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            found.insert(parts.join("::"), without_tests_and_comments(&text));
        }
    }
    found
}

/// The text before the first `#[cfg(test)]`, without `//` comments (doc links name modules
/// without importing them).
fn without_tests_and_comments(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `use` tree or an inline path names, braces expanded:
/// `crate::{a::B, c::{d, e}}` gives `crate::a::B`, `crate::c::d`, `crate::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let prefix = &tree[..open];
    let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut items, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current);
    items
        .iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(|i| expand(&format!("{prefix}{}", i.trim())))
        .collect()
}

/// The paths `code` names that start with `crate::` or `super::`, as `crate::...` paths.
fn paths(module: &str, code: &str) -> Vec<String> {
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    for (i, _) in compact.match_indices("crate::") {
        let rest = &compact[i..];
        let end = if rest["crate::".len()..].starts_with('{') {
            rest.find('}')
                .map(|e| matching_close(rest).unwrap_or(e) + 1)
        } else {
            rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        }
        .unwrap_or(rest.len());
        out.extend(expand(&rest[..end]));
    }
    let parent: Vec<&str> = module.split("::").collect();
    let parent = &parent[..parent.len() - 1];
    for (i, _) in compact.match_indices("super::") {
        let rest = &compact[i + "super::".len()..];
        let end = if rest.starts_with('{') {
            matching_close(rest).map_or(rest.len(), |e| e + 1)
        } else {
            rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len())
        };
        let mut base = vec!["crate"];
        base.extend_from_slice(parent);
        for p in expand(&rest[..end]) {
            out.push(format!("{}::{p}", base.join("::")));
        }
    }
    out
}

/// Index of the `}` closing the first `{` of `s`.
fn matching_close(s: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut graph = Graph::new();
    for (module, code) in &modules {
        let edges = graph.entry(module.clone()).or_default();
        for path in paths(module, code) {
            let segments: Vec<&str> = path.split("::").skip(1).collect();
            // The deepest module the path names (the rest names an item in it).
            let target = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|m| modules.contains_key(m));
            if let Some(target) = target
                && &target != module
                && !module.starts_with(&format!("{target}::"))
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

fn top_level(graph: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut out = Graph::new();
    for (from, tos) in graph {
        let edges = out.entry(top(from)).or_default();
        edges.extend(tos.iter().map(|t| top(t)).filter(|t| *t != top(from)));
    }
    out
}

fn drawing(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(from, to)| {
            format!(
                "{from} -> {}",
                Vec::from_iter(to.iter().cloned()).join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn modules_import_each_other_without_cycles() {
    let graph = graph();
    assert!(graph.len() > 20, "read too few modules: {graph:?}");
    for (name, g) in [
        ("module", graph.clone()),
        ("top-level module", top_level(&graph)),
    ] {
        let found = cycles(&g);
        assert!(
            found.is_empty(),
            "{name} import cycles: {found:?}\nimports:\n{}",
            drawing(&g)
        );
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    let found = cycles(&g);
    assert_eq!(found.len(), 1);
    assert_eq!(
        BTreeSet::from_iter(found[0].clone()),
        BTreeSet::from(["a".into(), "b".into(), "c".into()])
    );
}

#[test]
fn paths_are_read_from_use_trees_and_super() {
    let code = "use crate::{a::B, c::{d, e::F}};\nuse super::sibling::X;\nlet x = crate::g::h();";
    let found = paths("p::q", code);
    for want in [
        "crate::a::B",
        "crate::c::d",
        "crate::c::e::F",
        "crate::p::sibling::X",
        "crate::g::h",
    ] {
        assert!(found.iter().any(|p| p == want), "{want} not in {found:?}");
    }
}
