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

    /// Removes node `name` of `parent` and everything below it; returns the subtree that
    /// went (nothing is copied: what went stays reachable through it as long as it is
    /// held).
    pub fn remove(&mut self, parent: &str, name: &str, gen: u64) -> Option<Arc<Node>> {
        let p = self.get_mut(parent)?;
        let n = p.children.remove(name)?;
        p.gen = gen;
        Some(n)
    }
}

impl Node {
    /// The node at `rel` (a path relative to this one, `a/b`) in its subtree.
    pub fn find(&self, rel: &str) -> Option<&Node> {
        let mut n = self;
        for c in components(rel) {
            n = n.children.get(c)?;
        }
        Some(n)
    }

    /// Every node of its subtree, itself included (iterative: a tree as deep as paths allow
    /// must not exhaust a small stack).
    pub fn each(&self, mut f: impl FnMut(&Node)) {
        let mut stack = alloc::vec![self];
        while let Some(n) = stack.pop() {
            stack.extend(n.children.values().map(|c| &**c));
            f(n);
        }
    }
}

impl Tree {
    /// A released domain leaves nothing: nodes it owned pass to dom0 and its permission
    /// entries go. Returns how many nodes changed hands.
    pub fn forget_domain(&mut self, dom: crate::DomId, gen: u64) -> usize {
        let mut moved = 0;
        let mut stack: Vec<String> = alloc::vec![String::from("/")];
        while let Some(p) = stack.pop() {
            let Some(n) = self.get(&p) else { continue };
            for c in n.children.keys() {
                stack.push(if p == "/" { alloc::format!("/{}", c) } else { alloc::format!("{}/{}", p, c) });
            }
            let owns = n.perms.owner() == dom;
            let listed = n.perms.0[1..].iter().any(|e| e.dom == dom);
            if owns || listed {
                let mut perms = n.perms.clone();
                if owns && p != "/" {
                    perms.0[0].dom = 0;
                    moved += 1;
                }
                let first = perms.0[0];
                perms.0.retain(|e| e.dom != dom);
                if perms.0.is_empty() || perms.0[0] != first {
                    perms.0.insert(0, first);
                }
                self.set_perms(&p, perms, gen);
            }
        }
        moved
    }
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

/// Dropping a node drops its subtree one node at a time (not by recursion).
impl Drop for Node {
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node>> = core::mem::take(&mut self.children).into_values().collect();
        while let Some(n) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(n) {
                stack.extend(core::mem::take(&mut inner.children).into_values());
            }
        }
    }
}
