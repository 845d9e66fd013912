//! The house's layout: modules depend only on the layers below them (or, within a layer, on
//! each other without a cycle), read from the `crate::` paths in `src/`. A `use` that points
//! upward fails here, naming the file.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The library's top-level modules, from the top of the data flow to the leaves.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["commands", "audit", "daemon", "track"],
    &["callbacks", "listener"],
    &["session"],
    &["writer"],
    &["store"],
    &[
        "rules", "event", "classify", "privacy", "facts", "transit", "policy",
    ],
    &["config", "logging"],
    &["keys", "token", "ip", "metrics", "maillog"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer of tests/it/architecture.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/store/sqlite/wal.rs`: `store`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The code of a file without its comments (doc comments name modules in prose).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file names through `crate::`: `crate::x::...` and each first name
/// inside `crate::{...}`.
fn referenced(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The names at depth one of the braces.
            let (mut depth, mut expecting) = (1, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expecting = true,
                    c if expecting && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                        found.insert(ident(&group[i..]));
                        expecting = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found.remove("self");
    found
}

#[test]
fn dependencies_point_down_and_never_in_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut upward = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere.
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for dep in referenced(&code(text)) {
            if dep == module {
                continue;
            }
            if layer_of(&dep) < layer_of(&module) {
                upward.push(format!(
                    "{} ({module}) uses {dep}, a layer above it",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
            graph.entry(module.clone()).or_default().insert(dep);
        }
    }
    assert!(upward.is_empty(), "{}", upward.join("\n"));

    // Depth-first search for a cycle among the modules.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
    // The check sees the imports at all (a parser that found nothing would pass).
    assert!(graph["session"].contains("writer") && graph["store"].contains("event"));
}

#[test]
fn the_parser_reads_grouped_and_plain_paths() {
    let found = referenced(
        "use crate::{\n    config::{Config, X},\n    event::Event,\n};\nlet k = crate::keys::load(x);",
    );
    let expected: BTreeSet<String> = ["config", "event", "keys"].map(String::from).into();
    assert_eq!(found, expected);
}
