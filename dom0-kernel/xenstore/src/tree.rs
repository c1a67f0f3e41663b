//! The persistent node tree: nodes are shared, a change copies the path to it (so a
//! snapshot is one reference), and every node carries the generation of its last change.

use crate::path::components;
use crate::perms::Perms;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

#[derive(Clone, Debug)]
pub struct Node {
    pub value: Vec<u8>,
    pub perms: Perms,
    pub children: BTreeMap<String, Arc<Node>>,
    /// Generation of the last change of its value, permissions or set of children.
    pub gen: u64,
}

/// A tree (cloning it is a snapshot).
#[derive(Clone, Debug)]
pub struct Tree {
    root: Arc<Node>,
}

impl Tree {
    /// Just the root, owned by dom0 and closed to others.
    pub fn new() -> Tree {
        Tree { root: Arc::new(Node { value: Vec::new(), perms: Perms::owned_by(0), children: BTreeMap::new(), gen: 0 }) }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        let mut n = &*self.root;
        for c in components(path) {
            n = n.children.get(c)?;
        }
        Some(n)
    }

    /// The node at `path`, to change (the path to it copied where shared).
    fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        let mut n = Arc::make_mut(&mut self.root);
        for c in components(path) {
            n = Arc::make_mut(n.children.get_mut(c)?);
        }
        Some(n)
    }

    pub fn set_value(&mut self, path: &str, value: &[u8], gen: u64) {
        if let Some(n) = self.get_mut(path) {
            n.value = value.to_vec();
            n.gen = gen;
        }
    }

    pub fn set_perms(&mut self, path: &str, perms: Perms, gen: u64) {
        if let Some(n) = self.get_mut(path) {
            n.perms = perms;
            n.gen = gen;
        }
    }

    /// Adds node `name` under existing node `parent`.
    pub fn create(&mut self, parent: &str, name: &str, value: &[u8], perms: Perms, gen: u64) {
        if let Some(p) = self.get_mut(parent) {
            p.children.insert(name.to_string(), Arc::new(Node { value: value.to_vec(), perms, children: BTreeMap::new(), gen }));
            p.gen = gen;
        }
    }

    /// Removes node `name` of `parent` and everything below it; returns what went, each
    /// with its path and permissions.
    pub fn remove(&mut self, parent: &str, name: &str, gen: u64) -> Vec<(String, Perms)> {
        let mut gone = Vec::new();
        if let Some(p) = self.get_mut(parent) {
            if let Some(n) = p.children.remove(name) {
                p.gen = gen;
                let base = if parent == "/" { alloc::format!("/{}", name) } else { alloc::format!("{}/{}", parent, name) };
                collect(&base, &n, &mut gone);
            }
        }
        gone
    }
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

fn collect(path: &str, n: &Node, out: &mut Vec<(String, Perms)>) {
    out.push((path.to_string(), n.perms.clone()));
    for (c, child) in &n.children {
        collect(&alloc::format!("{}/{}", path, c), child, out);
    }
}
