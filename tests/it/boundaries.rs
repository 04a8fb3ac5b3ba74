//! Who may depend on whom, checked on the workspace's manifests (`cargo metadata`), so that
//! a dependency that breaks a boundary of docs/ARCHITECTURE.md ("Invariants") fails here
//! rather than in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// What runs in production: the image's binaries and every crate they are built from.
const PRODUCTION: &[&str] = &[
    "omsc",
    "runtime",
    "protocol",
    "stock-filter",
    "inventory",
    "sales",
    "orders",
    "postsales",
    "catalog",
    "gateway",
    "bus-client",
    "report",
];

/// What only the tests, the benchmark and demos use.
const NOT_PRODUCTION: &[&str] = &["simulate", "test-support", "bench"];

/// One workspace crate's dependencies on other workspace crates that a default build
/// compiles in: normal and build dependencies that are not optional, or optional ones its
/// default features turn on. Dev-dependencies are the tests' business.
fn built_in(package: &Value, members: &BTreeSet<String>) -> Vec<String> {
    let features = package["features"].as_object().cloned().unwrap_or_default();
    // Every feature the default set turns on, directly or through another feature.
    let mut on = BTreeSet::new();
    let mut todo = vec!["default".to_owned()];
    while let Some(feature) = todo.pop() {
        if !on.insert(feature.clone()) {
            continue;
        }
        for item in features
            .get(&feature)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let item = item.as_str().unwrap_or_default();
            let name = item.trim_start_matches("dep:").split('/').next().unwrap();
            todo.push(name.trim_end_matches('?').to_owned());
        }
    }
    package["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].as_str() != Some("dev"))
        .filter(|d| {
            let name = d["rename"].as_str().or(d["name"].as_str()).unwrap();
            !d["optional"].as_bool().unwrap_or(false) || on.contains(name)
        })
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .filter(|name| members.contains(name))
        .collect()
}

#[test]
fn nothing_in_production_depends_on_the_simulator_the_test_harness_or_the_bench() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages: BTreeMap<String, Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
        .collect();
    let members: BTreeSet<String> = packages.keys().cloned().collect();
    for name in PRODUCTION.iter().chain(NOT_PRODUCTION) {
        assert!(
            members.contains(*name),
            "{name} is not a workspace crate: update this test and docs/ARCHITECTURE.md"
        );
    }

    for root in PRODUCTION {
        // Through every workspace crate it builds in, not only its direct dependencies.
        let mut path: BTreeMap<String, String> =
            BTreeMap::from([((*root).to_owned(), String::new())]);
        let mut todo = vec![(*root).to_owned()];
        while let Some(name) = todo.pop() {
            for dependency in built_in(&packages[&name], &members) {
                if path.contains_key(&dependency) {
                    continue;
                }
                let via = format!(
                    "{} -> {dependency}",
                    if path[&name].is_empty() {
                        name.clone()
                    } else {
                        path[&name].clone()
                    }
                );
                assert!(
                    !NOT_PRODUCTION.contains(&dependency.as_str()),
                    "production crate {root} builds in {dependency} ({via})"
                );
                path.insert(dependency.clone(), via);
                todo.push(dependency);
            }
        }
    }
}
