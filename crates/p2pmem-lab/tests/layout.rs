//! The lab crate's layout stays readable: no two of its modules import each other,
//! directly or around a loop, and its groups use each other in one direction only
//! (`machine` and `build` below `run`, below `plans`, below `reports`). Read from the
//! sources' `crate::` paths, so a new cycle fails here, not in review.

#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `group/module` (or `module` at the top) for a file under `src/`.
fn module_of(rel: &Path) -> String {
    let s = rel.with_extension("").to_string_lossy().replace('\\', "/");
    s.strip_suffix("/mod").unwrap_or(&s).to_string()
}

/// Every `crate::a::b` in `text`, as the module it names (`a/b`, or `a` when `a` is a
/// top-level file).
fn imports(text: &str, top_files: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let words: Vec<&str> = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or("")
            .split("::")
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            [a, ..] if top_files.contains(*a) => {
                out.insert((*a).to_string());
            }
            [a, b, ..] => {
                out.insert(format!("{a}/{b}"));
            }
            _ => {}
        }
    }
    out
}

fn sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(&src).unwrap().to_path_buf();
                files.insert(module_of(&rel), std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    files
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    // Top-level files (`error`, `progress`), not groups (`run`, which has `run/lab`).
    let top: BTreeSet<String> = files
        .keys()
        .filter(|k| !k.contains('/') && !files.keys().any(|o| o.starts_with(&format!("{k}/"))))
        .cloned()
        .collect();
    files
        .iter()
        .map(|(m, text)| {
            let mut deps = imports(text, &top);
            deps.remove(m);
            deps.retain(|d| files.contains_key(d));
            (m.clone(), deps)
        })
        .collect()
}

#[test]
fn no_module_imports_around_a_loop() {
    let g = graph();
    assert!(g.len() > 15, "{:?}", g.keys());
    // Depth-first search for a back edge, reporting the loop.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for d in &g[m] {
            visit(d, g, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done);
    }
}

#[test]
fn groups_use_each_other_in_one_direction() {
    let rank = |m: &str| match m.split('/').next().unwrap_or("") {
        "machine" | "build" => Some(1),
        "run" => Some(2),
        "plans" => Some(3),
        "reports" => Some(4),
        _ => None, // lib, error, progress: used by all
    };
    for (m, deps) in graph() {
        for d in deps {
            if let (Some(a), Some(b)) = (rank(&m), rank(&d)) {
                assert!(a >= b, "{m} (level {a}) imports {d} (level {b}), upwards");
            }
        }
    }
}

#[test]
fn the_checker_sees_a_loop() {
    let text_a = "use crate::x::b;";
    let top = BTreeSet::new();
    assert_eq!(imports(text_a, &top), BTreeSet::from(["x/b".to_string()]));
    let top: BTreeSet<String> = ["error".to_string()].into();
    assert_eq!(
        imports("crate::error::{io_err, LabError}", &top),
        BTreeSet::from(["error".to_string()])
    );
}
