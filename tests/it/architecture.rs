//! docs/ARCHITECTURE.md's invariants stay tied to checks that exist: each names at least
//! one test (`path::function`) or `make` target, and each named one is there. A renamed or
//! deleted test, or an invariant written without a check, fails here.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The bullets of the `## Invariants` section, each as one line of text.
fn invariants(architecture: &str) -> Vec<String> {
    let section = architecture
        .split("\n## Invariants\n")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has an Invariants section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut bullets: Vec<String> = Vec::new();
    for line in section.lines() {
        if let Some(start) = line.strip_prefix("- ") {
            bullets.push(start.to_owned());
        } else if line.starts_with("  ")
            && let Some(last) = bullets.last_mut()
        {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    bullets
}

/// The checks a bullet names after "Checked by": backticked `path.rs::function` or `make x`.
fn checks(bullet: &str) -> Vec<String> {
    let Some((_, after)) = bullet.split_once("Checked by") else {
        return Vec::new();
    };
    after
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|c| c.contains(".rs::") || c.starts_with("make "))
        .map(str::to_owned)
        .collect()
}

/// Why `check` is not there, or `None` when it is.
fn missing(root: &Path, check: &str) -> Option<String> {
    if let Some(target) = check.strip_prefix("make ") {
        let makefile = std::fs::read_to_string(root.join("Makefile")).unwrap();
        let defined = makefile
            .lines()
            .any(|l| l.starts_with(&format!("{target}:")));
        return (!defined).then(|| format!("the Makefile has no target {target}"));
    }
    let (path, function) = check.split_once("::").unwrap();
    let Ok(code) = std::fs::read_to_string(root.join(path)) else {
        return Some(format!("{path} does not exist"));
    };
    let defined = code.contains(&format!("fn {function}("));
    (!defined).then(|| format!("{path} has no fn {function}"))
}

#[test]
fn every_invariant_names_checks_that_exist() {
    let root = root();
    let architecture = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let bullets = invariants(&architecture);
    assert!(
        bullets.len() >= 10,
        "only {} invariants found",
        bullets.len()
    );
    let mut problems = Vec::new();
    for bullet in &bullets {
        let named = checks(bullet);
        let start: String = bullet.chars().take(70).collect();
        if named.is_empty() {
            problems.push(format!("names no check: {start}…"));
        }
        for check in named {
            if let Some(why) = missing(&root, &check) {
                problems.push(format!("{why} ({start}…)"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_finds_an_invariant_without_a_check_and_a_check_that_is_gone() {
    let doc = "# A\n\n## Invariants\n\nIntro.\n\n- One thing holds. Checked by\n  `tests/it/architecture.rs::every_invariant_names_checks_that_exist`.\n- Another holds, unchecked.\n- A third. Checked by `tests/it/architecture.rs::gone`, `make nothing-such`.\n\n## Next\n\n- not an invariant\n";
    let bullets = invariants(doc);
    assert_eq!(bullets.len(), 3, "{bullets:?}");
    let root = root();
    assert!(
        checks(&bullets[0])
            .iter()
            .all(|c| missing(&root, c).is_none())
    );
    assert!(checks(&bullets[1]).is_empty());
    let third = checks(&bullets[2]);
    assert_eq!(third.len(), 2);
    assert!(
        third.iter().all(|c| missing(&root, c).is_some()),
        "{third:?}"
    );
}
