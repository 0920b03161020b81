//! The peer's layering, checked on its source: a module names only modules of its own layer or
//! below, and no two modules reach each other through `crate::` paths (no cycles). See the layer
//! picture in `src/lib.rs` and ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, lowest layer first; modules sharing a rank are siblings that must not name
/// each other.
const LAYERS: &[(&str, u8)] = &[
    ("storage", 0),
    ("comm", 0),
    ("channel", 1),
    ("execution", 2),
    ("endorsement", 3),
    ("validation", 3),
    ("services", 4),
    ("node", 5),
];

/// `crate::a::b::c` paths a file's non-test code names (the last segment may be an item).
fn crate_paths(source: &str) -> Vec<Vec<String>> {
    let code = match source.find("#[cfg(test)]\nmod tests") {
        Some(i) => &source[..i],
        None => source,
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        let path: Vec<String> = after[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !path.is_empty() {
            out.push(path);
        }
        rest = &after[end..];
    }
    out
}

/// Module path of a source file under `src/` (`storage/ledger/mod.rs` → `storage::ledger`).
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// Every module's `crate::` dependencies, resolved to the longest known module prefix.
fn module_graph(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&String> = files.keys().collect();
    let mut graph = BTreeMap::new();
    for (module, source) in files {
        let mut deps = BTreeSet::new();
        for path in crate_paths(source) {
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|p| modules.contains(p));
            if let Some(t) = target
                && &t != module
            {
                deps.insert(t);
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

fn rank_of(module: &str) -> Option<(&'static str, u8)> {
    let top = module.split("::").next().unwrap_or_default();
    LAYERS
        .iter()
        .find(|(name, _)| *name == top)
        .map(|(name, rank)| (*name, *rank))
}

/// Violations: upward or sideways references between layers, and cycles between modules.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, deps) in graph {
        if from.is_empty() {
            continue; // lib.rs declares the layers
        }
        let Some((from_top, from_rank)) = rank_of(from) else {
            out.push(format!("module {from} is in no layer"));
            continue;
        };
        for to in deps {
            let Some((to_top, to_rank)) = rank_of(to) else {
                out.push(format!("{from} names {to}, which is in no layer"));
                continue;
            };
            if to_top != from_top && to_rank >= from_rank {
                out.push(format!(
                    "{from} (layer {from_rank}) names {to} (layer {to_rank}): dependencies point down only"
                ));
            }
        }
    }
    for cycle in cycles(graph) {
        out.push(format!("module cycle: {}", cycle.join(" -> ")));
    }
    out
}

/// Strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w.as_str()]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w.as_str()) {
                    let low = self.low[v].min(self.index[w.as_str()]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
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
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn peer_modules_depend_downward_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: BTreeMap<String, String> = paths
        .iter()
        .filter(|p| !p.ends_with("main.rs"))
        .map(|p| {
            let relative = p.strip_prefix(&src).expect("under src");
            (
                module_of(relative),
                std::fs::read_to_string(p).expect("read source"),
            )
        })
        .collect();
    assert!(files.len() > 20, "found only {} modules", files.len());
    let graph = module_graph(&files);
    let problems = violations(&graph);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_catches_cycles_and_upward_references() {
    let files: BTreeMap<String, String> = [
        ("storage::ledger", "use crate::channel::Channel;"),
        ("channel", "use crate::storage::ledger::Ledger;"),
        ("services::deliver", "use crate::services::gateway::x;"),
        (
            "services::gateway",
            "fn f() { crate::services::deliver::y() }",
        ),
        ("endorsement", "use crate::validation::commit;"),
        ("validation", "use crate::channel::Channel;"),
    ]
    .into_iter()
    .map(|(m, s)| (m.to_owned(), s.to_owned()))
    .collect();
    let problems = violations(&module_graph(&files)).join("\n");
    assert!(problems.contains("storage::ledger (layer 0) names channel (layer 1)"));
    assert!(problems.contains("endorsement (layer 3) names validation (layer 3)"));
    assert!(problems.contains("module cycle: channel -> storage::ledger"));
    assert!(problems.contains("module cycle: services::deliver -> services::gateway"));
}
