//! The prompt graph as the worker sees it: cache signatures, links, and which node runs next.
//!
//! Signatures key the classic cache by class, constants and the signatures of linked
//! ancestors. Execution order follows ComfyUI's "UX friendly" pick among ready nodes: output
//! nodes first, then nodes feeding an output, then nodes two hops away, else the first ready.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::pyjson;

// NOTE: classes flagged non-idempotent, `IS_CHANGED` hooks (LoadImage's file hash) and the
// `--cache-lru`/`--cache-none` modes are not modelled: a re-uploaded input file with the same name
// is served from cache, where ComfyUI would re-run the loader.
pub(super) fn signatures(prompt: &Map<String, Value>) -> HashMap<String, String> {
    fn sig(
        id: &str,
        prompt: &Map<String, Value>,
        memo: &mut HashMap<String, String>,
        visiting: &mut HashSet<String>,
    ) -> String {
        if let Some(s) = memo.get(id) {
            return s.clone();
        }
        if !visiting.insert(id.to_string()) {
            return "cycle".into();
        }
        let node = prompt.get(id);
        let mut h = Sha256::new();
        h.update(
            node.and_then(|n| n.get("class_type"))
                .map(pyjson::to_string)
                .unwrap_or_default(),
        );
        let mut inputs: Vec<(String, Value)> = node
            .and_then(|n| n.get("inputs"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in inputs {
            h.update(k.as_bytes());
            match link_of(&v) {
                Some((src, slot)) => {
                    let s = sig(&src, prompt, memo, visiting);
                    h.update(format!("<link {s} {slot}>"));
                }
                None => h.update(pyjson::to_string(&v)),
            }
        }
        let s = hex::encode(&h.finalize()[..12]);
        visiting.remove(id);
        memo.insert(id.to_string(), s.clone());
        s
    }
    let mut memo = HashMap::new();
    let mut visiting = HashSet::new();
    for id in prompt.keys() {
        sig(id, prompt, &mut memo, &mut visiting);
    }
    memo
}

pub(super) fn link_of(v: &Value) -> Option<(String, usize)> {
    let a = v.as_array()?;
    if a.len() != 2 {
        return None;
    }
    Some((
        a[0].as_str()?.to_string(),
        a[1].as_i64().unwrap_or(0).max(0) as usize,
    ))
}

pub(super) struct Graph {
    pub(super) pending: Vec<String>,
    pub(super) deps: HashMap<String, Vec<String>>,
    pub(super) dependents: HashMap<String, Vec<String>>,
}

pub(super) fn build_graph(
    prompt: &Map<String, Value>,
    outputs: &[String],
    cached: &HashSet<String>,
) -> Graph {
    let mut g = Graph {
        pending: Vec::new(),
        deps: HashMap::new(),
        dependents: HashMap::new(),
    };
    for o in outputs {
        let mut stack = vec![o.clone()];
        while let Some(id) = stack.pop() {
            if g.pending.contains(&id) {
                continue;
            }
            g.pending.push(id.clone());
            let inputs = prompt
                .get(&id)
                .and_then(|n| n.get("inputs"))
                .and_then(Value::as_object);
            for v in inputs.into_iter().flat_map(|m| m.values()) {
                if let Some((src, _)) = link_of(v)
                    && prompt.contains_key(&src)
                    && !cached.contains(&src)
                {
                    stack.push(src.clone());
                    g.deps.entry(id.clone()).or_default().push(src.clone());
                    g.dependents.entry(src).or_default().push(id.clone());
                }
            }
        }
    }
    g
}

pub(super) fn pick(
    graph: &Graph,
    done: &HashSet<String>,
    is_output: &dyn Fn(&str) -> bool,
) -> Option<String> {
    let ready: Vec<&String> = graph
        .pending
        .iter()
        .filter(|n| {
            !done.contains(*n)
                && graph
                    .deps
                    .get(*n)
                    .is_none_or(|d| d.iter().all(|x| done.contains(x)))
        })
        .collect();
    let feeds = |n: &str| graph.dependents.get(n).cloned().unwrap_or_default();
    ready
        .iter()
        .find(|n| is_output(n))
        .or_else(|| ready.iter().find(|n| feeds(n).iter().any(|d| is_output(d))))
        .or_else(|| {
            ready.iter().find(|n| {
                feeds(n)
                    .iter()
                    .any(|d| feeds(d).iter().any(|e| is_output(e)))
            })
        })
        .or(ready.first())
        .map(|s| (*s).clone())
}
