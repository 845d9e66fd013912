//! The house's map, held to the code. `docs/architecture.md` is the map: its layers (modules
//! depend only on their own layer, without a cycle, and the layers below) and its table of every
//! file under `src/`. A `use` that points upward fails here, naming the file; so does a file the
//! table leaves out, or a file the page names that does not exist.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn map() -> String {
    std::fs::read_to_string(root().join("docs/architecture.md")).unwrap()
}

/// The text after `marker` up to the first blank line after its content.
fn section<'a>(map: &'a str, marker: &str) -> &'a str {
    let at = map
        .find(marker)
        .unwrap_or_else(|| panic!("docs/architecture.md has no {marker}"));
    let rest = &map[at + marker.len()..];
    let rest = rest.trim_start_matches(['\n', ' ', '-', '>']);
    rest.split("\n\n").next().unwrap()
}

/// The layers of the map: top-level modules, from the top of the data flow to the leaves.
/// A line of the block names its modules, then (after two spaces or more) what they are.
fn layers(map: &str) -> Vec<Vec<String>> {
    section(map, "<!-- layers")
        .lines()
        .filter(|l| !l.starts_with("```") && !l.trim().is_empty())
        .map(|l| {
            let names = l.split("  ").next().unwrap();
            names.split_whitespace().map(String::from).collect()
        })
        .collect()
}

fn layer_of(layers: &[Vec<String>], module: &str) -> usize {
    layers
        .iter()
        .position(|layer| layer.iter().any(|m| m == module))
        .unwrap_or_else(|| panic!("module {module} is in no layer of docs/architecture.md"))
}

/// The paths (under `src/`) of the map's table of files.
fn mapped_files(map: &str) -> BTreeSet<String> {
    section(map, "<!-- files")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l.split('`').next().unwrap().to_string())
        .collect()
}

/// Every file under `dir` (of the repository; any kind: templates too), relative to it.
fn files_under(dir: &str) -> BTreeSet<String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                out.insert(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let base = root().join(dir);
    let mut out = BTreeSet::new();
    walk(&base, &base, &mut out);
    out
}

fn src_files() -> BTreeSet<String> {
    files_under("src")
}

#[test]
fn every_file_of_src_is_on_the_map_and_the_map_names_no_other() {
    let map = map();
    let mapped = mapped_files(&map);
    let present = src_files();
    let unmapped: Vec<_> = present.difference(&mapped).collect();
    let gone: Vec<_> = mapped.difference(&present).collect();
    assert!(
        unmapped.is_empty() && gone.is_empty(),
        "docs/architecture.md's table of files: add {unmapped:?}; remove {gone:?} (no such file)"
    );
    // Each top-level module of the files is in a layer (main.rs and lib.rs stand outside).
    for file in &present {
        let top = file.split('/').next().unwrap().trim_end_matches(".rs");
        if !["main", "lib", "templates"].contains(&top) {
            layer_of(&layers(&map), top);
        }
    }
}

/// Whether a path the page names in backticks exists: from the repository's root, under `src/`,
/// or (a bare file name, `session.rs`, or a folder, `parse/`) somewhere under `src/` or
/// `tests/it/`.
fn exists(name: &str, src_files: &BTreeSet<String>) -> bool {
    let root = root();
    if root.join(name).exists() || root.join("src").join(name).exists() {
        return true;
    }
    let name = name.trim_start_matches("src/");
    src_files
        .iter()
        .map(|f| format!("src/{f}"))
        .chain(
            files_under("tests/it")
                .iter()
                .map(|f| format!("tests/it/{f}")),
        )
        .any(|f| {
            f.ends_with(&format!("/{name}"))
                || name.ends_with('/') && f.contains(&format!("/{name}"))
        })
}

/// The backticked words of `text` that look like a path: a file with an extension we keep
/// (`.rs`, `.j2`, `.md`, `.toml`, `.8`, `.5`) or a folder (`store/`).
fn named_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
                && !w.starts_with('.')
                && (w.ends_with('/') && w.len() > 1
                    || [".rs", ".j2", ".md", ".toml", ".8", ".5"]
                        .iter()
                        .any(|e| w.ends_with(e)))
        })
        .map(String::from)
        .collect()
}

#[test]
fn the_map_names_only_paths_that_exist() {
    let map = map();
    let files = src_files();
    let missing: Vec<_> = named_paths(&map)
        .into_iter()
        .filter(|p| !exists(p, &files))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn the_map_checks_can_fail() {
    let files = src_files();
    assert!(exists("session.rs", &files) && exists("store/sqlite/wal.rs", &files));
    assert!(exists("tests/it/cli.rs", &files) && exists("parse/", &files));
    assert!(!exists("listener.rs", &files) && !exists("store/sqlite/db.rs", &files));
    assert_eq!(
        named_paths("see `a.rs`, `x::y`, `store/`, `events.sinks`, `b/c.j2`"),
        ["a.rs", "store/", "b/c.j2"]
    );
    let layers = layers("<!-- layers -->\n```\na b   top\nc     leaves\n```\n");
    assert_eq!(layers, [vec!["a", "b"], vec!["c"]]);
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
    let layers = layers(&map());
    let src = root().join("src");
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
            if layer_of(&layers, &dep) < layer_of(&layers, &module) {
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
