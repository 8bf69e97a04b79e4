//! Keeps the layers of the module map in `lib.rs` true: reads every module's source and fails
//! when a `crate::` path points up the layer order, when two modules import each other
//! (directly or around a cycle), or when a module is missing from the table below.
//!
//! why: the compiler accepts any import inside a crate; without this the layering erodes one
//! convenient `use` at a time, and "where does X live" gets five answers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, top (1) to bottom (6). A module may import from its own
/// layer or any layer with a larger number.
const LAYERS: &[(&str, u8)] = &[
    ("cli", 1),
    ("config", 1),
    ("serve", 1),
    ("fuzzing", 1),
    ("api", 2),
    ("credentials", 3),
    ("identity", 3),
    ("p12test", 3),
    ("desired", 4),
    ("reconciler", 4),
    ("appkeys", 4),
    ("credential_tokens", 4),
    ("change_feed", 4),
    ("consistency", 4),
    ("xds", 4),
    ("store", 5),
    ("secret_store", 5),
    ("credential_kind", 6),
    ("tls_versions", 6),
    ("egress", 6),
    ("oauth2", 6),
    ("p12", 6),
    ("keystore", 6),
    ("keystore_budget", 6),
    ("key_pairing", 6),
    ("rejections", 6),
    ("cpu_pool", 6),
    ("certinfo", 6),
    ("secret", 6),
    ("clock", 6),
    ("random", 6),
    ("pki", 6),
    ("link_tls", 6),
    ("server_tls", 6),
    ("address_policy", 6),
    ("guarded_dns", 6),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`api/mappings.rs` → `api`); `None` for the crate
/// root, the binary and this test.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (!["lib", "main", "layering"].contains(&name.as_str())).then_some(name)
}

/// The production code of a file: tests (sibling `tests.rs` and `*_tests.rs` files, and
/// `mod tests` blocks) may reach anywhere, comments say anything.
fn code(file: &Path) -> String {
    if file
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "tests.rs" || n.ends_with("_tests.rs"))
    {
        return String::new();
    }
    let text = std::fs::read_to_string(file).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names through `crate::`, including inside
/// `use crate::{a, b::c}` groups.
fn references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                out.insert(name);
            }
        }
        rest = after;
    }
    out
}

/// Module → the modules it imports (itself excluded).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in all {
        let Some(module) = module_of(&f) else {
            continue;
        };
        let refs = references(&code(&f));
        let entry = g.entry(module.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != module));
    }
    g
}

#[test]
fn every_module_has_a_layer() {
    let missing: Vec<_> = graph()
        .keys()
        .filter(|m| layer(m).is_none())
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from LAYERS (and from lib.rs's map): {missing:?}"
    );
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let mut up = Vec::new();
    for (module, refs) in graph() {
        let Some(own) = layer(&module) else { continue };
        for r in refs {
            match layer(&r) {
                Some(l) if l < own => up.push(format!("{module} (layer {own}) -> {r} (layer {l})")),
                Some(_) => {}
                None => up.push(format!("{module} -> {r}: not a module in LAYERS")),
            }
        }
    }
    assert!(
        up.is_empty(),
        "imports that point up the layers:\n{}",
        up.join("\n")
    );
}

/// A cycle in the graph, as the path that closes it, if there is one.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search with colours: a grey node reached again closes a cycle.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        colour.insert(n.to_owned(), 1);
        path.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            match colour.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == m).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, g, colour, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        colour.insert(n.to_owned(), 2);
        None
    }
    let mut colour = BTreeMap::new();
    for n in g.keys() {
        if colour.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, g, &mut colour, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_import_cycles() {
    if let Some(c) = find_cycle(&graph()) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn the_checker_finds_what_it_must() {
    // Grouped and inline paths are read.
    let refs = references(
        "use crate::{a, b::c};\nfn f() { crate::d::e(); }\nlet x = crate::store::{self};",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["a", "b", "d", "store"]
    );
    // A cycle of three is found; a chain is not a cycle.
    let edges = |pairs: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    assert_eq!(
        find_cycle(&edges(&[("x", "y"), ("y", "z"), ("z", "x")])),
        Some(vec!["x".into(), "y".into(), "z".into(), "x".into()])
    );
    assert_eq!(find_cycle(&edges(&[("x", "y"), ("y", "z")])), None);
}
