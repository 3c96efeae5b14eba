//! The library's layering, read from its sources: no import cycle between
//! top-level modules, the cost model and the runtimes' measurements apart
//! (`measure` does not reach into `prune`, `data` not into `measure`), and
//! clap only in the CLI or behind its feature.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules its files name as `crate::X`
/// (the CLI and `main.rs` are the binary, not the library).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "cli" | "main" | "lib") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
    }
    graph
}

fn cycle_from(
    g: &BTreeMap<String, BTreeSet<String>>,
    at: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(k) = path.iter().position(|p| p == at) {
        let mut c = path[k..].to_vec();
        c.push(at.to_string());
        return Some(c);
    }
    if done.contains(at) {
        return None;
    }
    path.push(at.to_string());
    for d in g.get(at).into_iter().flatten() {
        if let Some(c) = cycle_from(g, d, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(at.to_string());
    None
}

#[test]
fn top_level_modules_import_no_cycle() {
    let g = imports();
    assert!(g.len() >= 15, "{:?}", g.keys());
    let mut done = BTreeSet::new();
    for m in g.keys() {
        let c = cycle_from(&g, m, &mut vec![], &mut done);
        assert!(c.is_none(), "import cycle: {}", c.unwrap().join(" → "));
    }
}

#[test]
fn measurement_and_data_stay_below_pruning_and_measurement() {
    let g = imports();
    for (from, to) in [
        ("measure", "prune"),
        ("measure", "train"),
        ("measure", "cost"),
        ("data", "measure"),
        ("data", "train"),
        ("graph", "train"),
        ("cost", "train"),
        ("progress", "train"),
    ] {
        assert!(!g[from].contains(to), "{from} imports {to}: {:?}", g[from]);
    }
}

#[test]
fn clap_is_only_in_the_cli_or_behind_its_feature() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&src, &mut files);
    for f in files.iter().filter(|f| !f.starts_with(src.join("cli"))) {
        let text = std::fs::read_to_string(f).unwrap();
        for line in text.lines().filter(|l| l.contains("clap")) {
            assert!(
                line.contains("cfg_attr(feature = \"cli\"") || line.trim_start().starts_with("//"),
                "{}: {line}",
                f.display()
            );
        }
    }
}
