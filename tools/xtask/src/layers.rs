//! `hypervisor/src` must stay layered: no two of its modules may reach each other, directly
//! or around a circle. Part of `cargo xtask test` (after clippy): the modules' `crate::` and
//! `super::` paths are collected and a circle is an error naming its modules.
//!
//! A path names the longest module prefix it has (`crate::hypercall::mmu::pt` →
//! `hypercall::mmu`); a name the crate root re-exports (`pub use state::{Hv, ..}` in
//! `main.rs`) counts as a use of the module it comes from. Comments are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name (`hypercall::mmu`) → its source without comments.
fn modules(src: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let p = e.map_err(|e| e.to_string())?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).map_err(|e| e.to_string())?.with_extension("");
            let mut name = rel.to_string_lossy().replace('/', "::");
            if let Some(parent) = name.strip_suffix("::mod") {
                name = parent.to_string();
            }
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            out.insert(name, strip_comments(&text));
        }
    }
    Ok(out)
}

fn strip_comments(s: &str) -> String {
    s.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// The identifier paths after each `prefix` (`crate::a::b`, `crate::{a, b::c}`).
fn paths_after(src: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                out.push(split_path(part.trim()));
            }
        } else {
            out.push(split_path(rest));
        }
    }
    out
}

fn split_path(s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    segs
}

/// Each module's set of modules it uses.
fn deps(mods: &BTreeMap<String, String>, root: &str) -> BTreeMap<String, BTreeSet<String>> {
    // Names the crate root re-exports: `pub use module::{A, B}` / `pub use module::A`.
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    if let Some(r) = mods.get(root) {
        for line in r.lines().map(str::trim).filter(|l| l.starts_with("pub use ")) {
            let body = line.trim_start_matches("pub use ").trim_end_matches(';');
            if let Some((m, names)) = body.split_once("::") {
                let names = names.trim_start_matches('{').trim_end_matches('}');
                for n in names.split(',') {
                    reexports.insert(n.trim().to_string(), m.to_string());
                }
            }
        }
    }
    let longest = |segs: &[String]| -> Option<String> {
        (1..=segs.len()).rev().map(|k| segs[..k].join("::")).find(|c| mods.contains_key(c))
    };
    let mut out = BTreeMap::new();
    for (name, src) in mods {
        let mut d = BTreeSet::new();
        for segs in paths_after(src, "crate::") {
            let target = longest(&segs).or_else(|| segs.first().and_then(|s| reexports.get(s).cloned()));
            d.extend(target);
        }
        let parent = name.rsplit_once("::").map(|(p, _)| p.to_string());
        for segs in paths_after(src, "super::") {
            let Some(p) = &parent else { continue };
            let mut full = vec![p.clone()];
            full.extend(segs);
            d.extend(longest(&full.join("::").split("::").map(str::to_string).collect::<Vec<_>>()));
        }
        d.remove(name);
        d.remove(root);
        out.insert(name.clone(), d);
    }
    out
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), next: 0, out: Vec::new() };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Fails if `hypervisor/src` has an import circle.
pub fn check(root: &Path) -> Result<(), String> {
    let mods = modules(&root.join("hypervisor/src"))?;
    let c = circles(&deps(&mods, "main"));
    if c.is_empty() {
        println!("layers: {} modules of hypervisor/src, no import circle", mods.len());
        return Ok(());
    }
    Err(format!("hypervisor/src has import circles: {}", c.iter().map(|m| m.join(" <-> ")).collect::<Vec<_>>().join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(src: &[(&str, &str)]) -> Vec<Vec<String>> {
        let mods = src.iter().map(|(n, s)| (n.to_string(), strip_comments(s))).collect();
        circles(&deps(&mods, "main"))
    }

    #[test]
    fn finds_circles_and_ignores_comments() {
        assert!(g(&[("main", ""), ("a", "use crate::b::X;"), ("b", "// crate::a::Y\nfn f() {}")]).is_empty());
        assert_eq!(g(&[("main", ""), ("a", "use crate::b::X;"), ("b", "fn f() { crate::a::y() }")]), vec![vec!["a".to_string(), "b".to_string()]]);
        // Through a root re-export and a child's `super::`.
        let c = g(&[("main", "pub use a::{Hv, Other};"), ("a", "use crate::b::c::z;"), ("b", ""), ("b::c", "use super::super::x; fn f(_: crate::Hv) {}")]);
        assert_eq!(c, vec![vec!["a".to_string(), "b::c".to_string()]]);
        assert!(g(&[("main", ""), ("a", "use crate::{b, c::d};"), ("b", ""), ("c", "use crate::b;")]).is_empty());
        assert_eq!(g(&[("main", ""), ("a", "use crate::{b, c::d};"), ("b", ""), ("c", "use crate::a;")]).len(), 1);
    }

    #[test]
    fn the_tree_has_none() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        check(&root).unwrap();
    }
}
