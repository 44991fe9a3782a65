//! The transcript of a guest script built from `step NAME CMD...` and `hash NAME ...`
//! shell functions: `@@step NAME rc=N` / output / `@@stderr` / stderr / `@@end` blocks
//! and `@@hash NAME SHA256` lines. Included with `#[path]` by the lab tests that use it.

use serde_json::Value;
use std::collections::BTreeMap;

/// One step's exit status and output.
pub struct Step {
    pub rc: i32,
    pub out: String,
    pub err: String,
}

impl Step {
    /// The step's stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.out, self.err))
    }
}

/// Every step and hash of one guest run, and the raw stdout for messages.
pub struct Transcript {
    pub steps: BTreeMap<String, Step>,
    pub hashes: BTreeMap<String, String>,
    pub stdout: String,
}

impl Transcript {
    /// Parse a guest's stdout.
    pub fn parse(stdout: &str) -> Self {
        let mut steps = BTreeMap::new();
        for chunk in stdout.split("@@step ").skip(1) {
            let (head, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
            let (name, rc) = head.split_once(" rc=").unwrap();
            let (out, rest) = rest.split_once("\n@@stderr\n").unwrap();
            let err = rest.split("\n@@end").next().unwrap_or_default();
            steps.insert(
                name.to_string(),
                Step {
                    rc: rc.trim().parse().unwrap(),
                    out: out.to_string(),
                    err: err.to_string(),
                },
            );
        }
        let hashes = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("@@hash "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, h)| (n.to_string(), h.trim().to_string()))
            .collect();
        Self {
            steps,
            hashes,
            stdout: stdout.to_string(),
        }
    }

    /// A step the script must have reached.
    pub fn step(&self, name: &str) -> &Step {
        self.steps.get(name).unwrap_or_else(|| {
            panic!(
                "no step {name}: the script did not get there\n{}",
                self.stdout
            )
        })
    }

    /// A step that must have succeeded.
    pub fn ok(&self, name: &str) -> &Step {
        let s = self.step(name);
        assert_eq!(s.rc, 0, "{name} failed: {}\n{}", s.out, s.err);
        s
    }

    /// A recorded sha256.
    pub fn hash(&self, name: &str) -> &str {
        let h = self
            .hashes
            .get(name)
            .unwrap_or_else(|| panic!("no hash {name}\n{}", self.stdout));
        assert_eq!(h.len(), 64, "{name}: not a sha256: {h}");
        h
    }
}
