//! The layout of the gateway and of `weir-core`, checked: each crate's
//! modules depend on each other without a cycle, the layers of each
//! `lib.rs` only on the layers before them, and no function is longer than
//! a reader can hold (150 lines). (The gateway uses `weir-core`, never the
//! other way round: cargo holds that one.)
//!
//! It reads the sources as text: every `crate::…` and `super::…` path
//! (in `use` lines and in code; tests and comments left out) names the
//! module it leads to; a module and its own submodules may use each other.
//! Run it alone with `cargo test -p weir-gateway --test layout`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers of the gateway's `lib.rs`, lowest first: a module may use its
/// own layer's modules and those of the layers before it, never a later
/// layer's. (`model` and `config` are `weir-core`'s, re-exported.)
const LAYERS: &[&[&str]] = &[&["respond"], &["ops"], &["pipeline"], &["edge"], &["node"]];

/// The layers of `weir-core`: the types, the configuration, then the
/// parsers of outside data and the record, which use both.
const CORE_LAYERS: &[&[&str]] = &[
    &["model"],
    &["config"],
    &["decode", "encoding", "headers", "record"],
];

/// The source folders of the two crates.
fn gateway_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn core_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src")
}

/// The longest function allowed, in lines from `fn` to its closing brace.
const MAX_FUNCTION_LINES: usize = 150;

/// Every module of the library: its path (`edge::auth`) and its source,
/// test modules cut off.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let mut path: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path.last().map(String::as_str) == Some("mod") {
            path.pop();
        }
        let name = path.join("::");
        if name == "lib" || name == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let code = match text.find("#[cfg(test)]") {
            Some(at) => &text[..at],
            None => &text,
        };
        // Comments (a doc link is no dependency) left out.
        let code: Vec<&str> = code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect();
        modules.insert(name, code.join("\n"));
    }
    modules
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The paths a source names after `crate::` or `super::`, with `use`
/// groups (`crate::{a, b::{c, d}}`) spelled out; `super` resolved against
/// `module`.
fn paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (root, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        let mut rest = code;
        while let Some(at) = rest.find(root) {
            // `crate::` inside a longer name (`weir_crate::`) is not a path.
            let before = rest[..at].chars().next_back();
            let after = &rest[at + root.len()..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            expand(&base, after, &mut out);
        }
    }
    out
}

/// The module `super` names from `module`: its parent. (`mod.rs` files are
/// their folder's module, so this holds for them too.)
fn parent(module: &str) -> Vec<String> {
    let mut parts: Vec<String> = module.split("::").map(str::to_owned).collect();
    parts.pop();
    parts
}

/// Reads one path (or `{…}` group) at the start of `text` onto `prefix`.
fn expand(prefix: &[String], text: &str, out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    let mut rest = text;
    loop {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            path.push(name.clone());
            rest = &rest[name.len()..];
            match rest.strip_prefix("::") {
                Some(after) => rest = after,
                None => break,
            }
        } else if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..closing_brace(group)];
            for item in split_top_level(inner) {
                expand(&path, item.trim(), out);
            }
            return;
        } else {
            break;
        }
    }
    out.push(path);
}

/// The index of the `}` that closes a group whose `{` was just read.
fn closing_brace(text: &str) -> usize {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The items of a `use` group, split at commas outside nested groups.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// Whether `a` is `b`, or one contains the other.
fn related(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

/// Module → the modules it uses (its own submodules and parents aside).
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let mut graph = BTreeMap::new();
    for (module, code) in &modules {
        let mut uses = BTreeSet::new();
        for path in paths(module, code) {
            // The longest prefix of the path that is a module.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target {
                if !related(module, &target) {
                    uses.insert(target);
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A cycle of the graph, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, done, stack) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn no_module_depends_on_itself_through_others() {
    for (src, at_least) in [(gateway_src(), 20), (core_src(), 6)] {
        let graph = dependencies(&src);
        assert!(
            graph.len() >= at_least,
            "read the sources: {:?}",
            graph.keys()
        );
        if let Some(found) = cycle(&graph) {
            panic!("import cycle: {}", found.join(" -> "));
        }
    }
}

#[test]
fn a_layer_uses_only_the_layers_before_it() {
    for (src, layers) in [(gateway_src(), LAYERS), (core_src(), CORE_LAYERS)] {
        let layer_of = |module: &str| {
            let top = module.split("::").next().unwrap_or(module);
            layers
                .iter()
                .position(|layer| layer.contains(&top))
                .unwrap_or_else(|| panic!("module {module} is in no layer of {layers:?}"))
        };
        let mut wrong = Vec::new();
        for (module, uses) in dependencies(&src) {
            for used in uses {
                if layer_of(&used) > layer_of(&module) {
                    wrong.push(format!("{module} -> {used}"));
                }
            }
        }
        assert!(wrong.is_empty(), "uses of a later layer: {wrong:#?}");
    }
}

#[test]
fn no_function_is_longer_than_a_screenful_or_two() {
    let mut long = Vec::new();
    for src in [gateway_src(), core_src()] {
        let mut files = Vec::new();
        walk(&src, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a readable source file");
            let lines: Vec<&str> = text.lines().collect();
            for (start, line) in lines.iter().enumerate() {
                let trimmed = line.trim_start();
                let is_fn = [
                    "fn ",
                    "pub fn ",
                    "pub(crate) fn ",
                    "pub(super) fn ",
                    "async fn ",
                ]
                .iter()
                .chain(&[
                    "pub async fn ",
                    "pub(crate) async fn ",
                    "pub(super) async fn ",
                ])
                .any(|p| trimmed.starts_with(p));
                if !is_fn {
                    continue;
                }
                // A declaration without a body (in a trait) ends with `;`.
                let signature_end = lines[start..]
                    .iter()
                    .find(|l| l.ends_with('{') || l.ends_with(';') || l.ends_with('}'));
                if signature_end.is_some_and(|l| l.ends_with(';')) {
                    continue;
                }
                // rustfmt closes a body at the indentation of its `fn`.
                let indent = &line[..line.len() - trimmed.len()];
                let close = format!("{indent}}}");
                let Some(end) = lines[start..].iter().position(|l| *l == close) else {
                    continue;
                };
                if end + 1 > MAX_FUNCTION_LINES {
                    long.push(format!(
                        "{}:{} {} lines",
                        file.strip_prefix(&src).unwrap_or(&file).display(),
                        start + 1,
                        end + 1
                    ));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines: {long:#?}"
    );
}
