//! Layout rules ARCHITECTURE.md states, checked on the source tree (in the spirit of
//! rust-analyzer's `tidy`): which module may name which dependency, the store backend's module
//! graph, file sizes, and a codemap that names every file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files may be this long; a longer one must be named in ARCHITECTURE.md's list of exceptions.
const MAX_LINES: usize = 700;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, as (path relative to `src/`, text).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .expect("under src")
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = std::fs::read_to_string(&path).expect("source is UTF-8");
                out.push((rel, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &src(), &mut out);
    out
}

/// The code of a file without comments (line comments and doc comments), so names in prose do
/// not count as uses.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn architecture() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md exists")
}

#[test]
fn each_dependency_is_named_only_by_its_owner() {
    // (crate, the only place it may be named)
    let owners = [
        ("rusqlite", "store/sqlite/"),
        ("tokio_postgres", "store/postgres/"),
        ("deadpool_postgres", "store/postgres/"),
        ("wasmtime", "sandbox/"),
        ("axum", "api/"),
    ];
    let mut wrong = Vec::new();
    for (file, text) in sources() {
        let code = code(&text);
        for (krate, owner) in owners {
            let named = code.contains(&format!("{krate}::"))
                || code.contains(&format!("use {krate}"))
                || code.contains(&format!("{krate}_"));
            if named && !file.starts_with(owner) {
                wrong.push(format!("{file} names {krate} (only {owner} may)"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Whether `code` names the identifier `word` (not as part of a longer one).
fn names(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(word)
        .any(|(at, _)| !code[..at].ends_with(ident) && !code[at + word.len()..].starts_with(ident))
}

/// Whether `code` imports the store's handle (`use crate::store::Store` or in a `{…}` list).
fn imports_store(code: &str) -> bool {
    code.match_indices("use crate::store::").any(|(at, _)| {
        let rest = &code[at..];
        let import = &rest[..rest.find(';').unwrap_or(rest.len())];
        names(import, "Store")
    })
}

#[test]
fn api_handlers_never_reach_the_store() {
    let wrong: Vec<String> = sources()
        .into_iter()
        .filter(|(file, text)| {
            file.starts_with("api/")
                && (code(text).contains(".store()") || imports_store(&code(text)))
        })
        .map(|(file, _)| file)
        .collect();
    assert!(
        wrong.is_empty(),
        "these API files call the store directly instead of the engine: {wrong:?}"
    );
}

/// The modules of a backend's directory (`store/sqlite/`, `store/postgres/`) each file uses
/// (`super::x` paths), by file; a `x_tests.rs` file counts as part of `x`.
fn store_graph(dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let module_of = |f: &str| {
        f[dir.len()..]
            .trim_end_matches(".rs")
            .trim_end_matches("_tests")
            .to_owned()
    };
    let files: Vec<(String, String)> = sources()
        .into_iter()
        .filter(|(f, _)| f.starts_with(dir) && !f.ends_with("mod.rs"))
        .collect();
    // Test-only support (fixtures, test databases) is no part of the graph.
    let modules: BTreeSet<String> = files
        .iter()
        .map(|(f, _)| module_of(f))
        .filter(|m| !["fixtures", "run_fixtures", "testing"].contains(&m.as_str()))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in &files {
        let me = module_of(file);
        let code = code(text);
        let mut uses = BTreeSet::new();
        for module in &modules {
            if module != &me
                && (code.contains(&format!("super::{module}::"))
                    || code.contains(&format!("super::{module};"))
                    || code.contains(&format!("super::{{{module}")))
            {
                uses.insert(module.clone());
            }
        }
        graph.entry(me).or_default().extend(uses);
    }
    graph
}

#[test]
fn the_sqlite_store_has_no_import_cycle() {
    assert_no_import_cycle("store/sqlite/", &["rows", "guards", "journal", "run_env"]);
}

#[test]
fn the_postgres_store_has_no_import_cycle() {
    assert_no_import_cycle("store/postgres/", &["rows", "journal", "run_env"]);
}

/// No module of the backend in `dir` reaches itself through the modules it uses, and `leaves`
/// use none.
fn assert_no_import_cycle(dir: &str, leaves: &[&str]) {
    let graph = store_graph(dir);
    // Depth-first search for a back edge; report the cycle found.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("{dir} has an import cycle: {}", cycle.join(" -> "));
        }
    }
    // The leaves stay leaves: row mappers, the journal writer and the runs' env copies (which
    // may read through the row mappers, the leaf of leaves).
    for &leaf in leaves {
        assert!(
            graph[leaf].iter().all(|m| leaf != "rows" && m == "rows"),
            "{leaf} must not use other store modules: {:?}",
            graph[leaf]
        );
    }
}

#[test]
fn files_stay_small_unless_the_architecture_says_why() {
    let architecture = architecture();
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > MAX_LINES)
        .filter(|(file, _)| !architecture.contains(&format!("`{file}` is long because")))
        .map(|(file, text)| format!("{file}: {} lines", text.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "split these by responsibility, or say in ARCHITECTURE.md (\"`<file>` is long because …\") why not: {long:#?}"
    );
}

#[test]
fn the_codemap_names_every_file() {
    let architecture = architecture();
    let missing: Vec<String> = sources()
        .into_iter()
        .map(|(file, _)| file)
        .filter(|file| !architecture.contains(&format!("`src/{file}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's codemap does not name these files (as `src/<path>`): {missing:#?}"
    );
}
