//! Who may know what, checked on the sources: the boundaries of docs/ARCHITECTURE.md
//! ("Invariants") that a dependency list cannot show. Tables and views are taken from the
//! migrations and methods from the modules' queues, so what is added later is covered
//! without editing these checks. Only string literals count (SQL lives in them); comments
//! may name anything.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every table and view the migrations create.
fn relations() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(root().join("migrations")).expect("the migrations directory") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sql") {
            continue;
        }
        let sql = fs::read_to_string(&path).unwrap().to_lowercase();
        let words: Vec<&str> = sql
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        // CREATE [OR REPLACE] [UNLOGGED | MATERIALIZED] TABLE|VIEW [IF NOT EXISTS] [public.]name
        for (i, word) in words.iter().enumerate() {
            if *word != "create" {
                continue;
            }
            let mut rest = words[i + 1..].iter().copied().skip_while(|w| {
                matches!(
                    *w,
                    "or" | "replace" | "unlogged" | "materialized" | "temporary"
                )
            });
            if !matches!(rest.next(), Some("table" | "view")) {
                continue;
            }
            let mut rest = rest.skip_while(|w| matches!(*w, "if" | "not" | "exists" | "public"));
            if let Some(name) = rest.next() {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The string literals of Rust source `code` (plain, byte and raw), with the line each
/// starts on; comments and character literals are skipped.
fn string_literals(code: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                line += usize::from(chars[i] == '\n');
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            // A character literal ('x', '\n', '"') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c == 'r'
            && (i == 0
                || !ident(chars[i - 1])
                || (chars[i - 1] == 'b' && (i == 1 || !ident(chars[i - 2]))))
            && matches!(next, Some('"' | '#'))
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                i += 1;
                continue;
            }
            let start = j + 1;
            let mut end = start;
            while end < chars.len()
                && !(chars[end] == '"' && (0..hashes).all(|k| chars.get(end + 1 + k) == Some(&'#')))
            {
                end += 1;
            }
            let text: String = chars[start..end.min(chars.len())].iter().collect();
            found.push((line, text.clone()));
            line += text.matches('\n').count();
            i = end + 1 + hashes;
        } else if c == '"' {
            let mut text = String::new();
            let start_line = line;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    text.push(chars[i]);
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    line += usize::from(c == '\n');
                    text.push(c);
                }
                i += 1;
            }
            found.push((start_line, text));
            i += 1;
        } else {
            i += 1;
        }
    }
    found
}

/// The `.rs` files below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// `(file:line, what)` for every place in `crate_dir`'s sources where `find` finds something
/// in a string literal, up to the file's unit tests (`#[cfg(test)]`, at its end by custom:
/// examples there may name anything).
fn literals_naming(crate_dir: &str, find: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let root = root();
    let mut found = Vec::new();
    for file in sources(&root.join(crate_dir).join("src")) {
        let code = fs::read_to_string(&file).unwrap();
        let production = code.split("#[cfg(test)]").next().unwrap_or_default();
        for (line, text) in string_literals(production) {
            for what in find(&text) {
                let shown = file.strip_prefix(&root).unwrap_or(&file);
                found.push(format!("{}:{line}: {what}", shown.display()));
            }
        }
    }
    found
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The relations `text` writes: `INSERT INTO x`, `UPDATE x`, `DELETE FROM x`, `COPY x`,
/// `TRUNCATE x`.
fn written(text: &str) -> Vec<String> {
    let words: Vec<String> = words(text).collect();
    let mut out = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let target = match word.as_str() {
            "insert" | "delete" if words.get(i + 1).is_some_and(|w| w == "into" || w == "from") => {
                words.get(i + 2)
            }
            "update" | "copy" | "truncate" => words.get(i + 1),
            _ => None,
        };
        if let Some(target) = target {
            out.push(target.clone());
        }
    }
    out
}

/// The tables the runtime owns: the outbox, the dead letters, the statistics, the
/// registration, the settings. Every other relation is a module's (or the shop's).
const RUNTIME_TABLES: &[&str] = &[
    "outbox",
    "dead_letters",
    "omsc_endpoint_stats",
    "omsc_gauge_stats",
    "omsc_settings",
    "omsc_workers",
    "connector_modules",
    "connector_registration",
];

/// The stock tables, which only the stock filter writes.
const STOCK_TABLES: &[&str] = &[
    "stock_items",
    "source_stock_items",
    "stock_zeroing_floors",
    "stock_nonzero_pending",
];

#[test]
fn the_migrations_name_the_tables_these_checks_rely_on() {
    let relations = relations();
    for table in RUNTIME_TABLES.iter().chain(STOCK_TABLES).chain(&[
        "sales_orders",
        "sales_order_lines",
        "postsales_returns",
    ]) {
        assert!(relations.contains(*table), "{table} not in {relations:?}");
    }
}

#[test]
fn the_scan_finds_sql_in_literals_and_not_in_comments() {
    let table = ["sales", "order_lines"].join("_");
    let code = format!(
        "// {table}\n/* {table} */\nconst Q: &str = \"\n  SELECT 1 FROM {table} l\";\nconst R: &str = r#\"x {table}\"#;\nfn f<'a>(c: char) -> bool {{ c == '\"' }}\n"
    );
    let found: Vec<(usize, bool)> = string_literals(&code)
        .into_iter()
        .map(|(line, text)| (line, words(&text).any(|w| w == table)))
        .collect();
    assert_eq!(found, vec![(3, true), (5, true)]);
    assert_eq!(
        written("INSERT INTO stock_items (a) SELECT 1; update Source_Stock_Items SET"),
        ["stock_items", "source_stock_items"]
    );
    assert!(written("SELECT updated_at FROM stock_items").is_empty());
}

#[test]
fn postsales_holds_no_sql_on_sales_tables() {
    let sales: BTreeSet<String> = relations()
        .into_iter()
        .filter(|r| r.starts_with("sales_"))
        .collect();
    let found = literals_naming("crates/postsales", |text| {
        words(text).filter(|w| sales.contains(w)).collect()
    });
    assert!(
        found.is_empty(),
        "post-sales reads orders only through the sales read API (crate `orders`), \
         but these literals name a sales table:\n{}",
        found.join("\n")
    );
}

#[test]
fn postsales_depends_on_the_read_api_not_on_sales() {
    let manifest = fs::read_to_string(root().join("crates/postsales/Cargo.toml")).unwrap();
    let keys: Vec<&str> = manifest
        .lines()
        .map(str::trim)
        .filter_map(|l| l.split(['.', '=', ' ']).next())
        .collect();
    assert!(keys.contains(&"orders"), "postsales must use the read API");
    assert!(
        !keys.contains(&"sales"),
        "postsales must not depend on the sales module's crate, only on `orders`"
    );
}

#[test]
fn runtime_knows_no_modules_tables_nor_methods() {
    let manifest = fs::read_to_string(root().join("crates/runtime/Cargo.toml")).unwrap();
    for module in [
        "inventory",
        "sales",
        "orders",
        "postsales",
        "catalog",
        "gateway",
        "stock-filter",
    ] {
        assert!(
            !manifest
                .lines()
                .any(|l| l.trim().starts_with(&format!("{module}."))
                    || l.trim().starts_with(&format!("{module} "))),
            "crates/runtime depends on the module crate {module}"
        );
    }
    let modules_tables: BTreeSet<String> = relations()
        .into_iter()
        .filter(|r| !RUNTIME_TABLES.contains(&r.as_str()))
        .collect();
    let methods: BTreeSet<&str> = omsc::modules::queues()
        .iter()
        .flat_map(|q| q.oms_bindings.iter().copied())
        .collect();
    let found = literals_naming("crates/runtime", |text| {
        let mut named: Vec<String> = words(text).filter(|w| modules_tables.contains(w)).collect();
        named.extend(
            methods
                .iter()
                .filter(|m| text.contains(**m))
                .map(|m| (*m).to_owned()),
        );
        named
    });
    assert!(
        found.is_empty(),
        "the runtime is every module's and no module's: these literals name a module's table \
         or method:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_stock_filter_writes_the_stock_tables() {
    let mut found = Vec::new();
    for dir in fs::read_dir(root().join("crates")).unwrap() {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        // The filter itself; and what is not production (a test harness, the simulator
        // and the benchmark's naive peer write stock on purpose).
        if ["stock-filter", "simulate", "test-support", "bench"].contains(&name.as_str()) {
            continue;
        }
        found.extend(literals_naming(&format!("crates/{name}"), |text| {
            written(text)
                .into_iter()
                .filter(|t| STOCK_TABLES.contains(&t.as_str()))
                .collect()
        }));
    }
    assert!(
        found.is_empty(),
        "only crates/stock-filter writes the stock tables (the compare-and-set lives there):\n{}",
        found.join("\n")
    );
}

#[test]
fn protocol_does_no_io() {
    let manifest = fs::read_to_string(root().join("crates/protocol/Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap_or_default()
        .split("\n[")
        .next()
        .unwrap_or_default();
    let io_crates = [
        "tokio",
        "lapin",
        "tokio-postgres",
        "deadpool-postgres",
        "hyper",
        "hyper-util",
        "axum",
        "reqwest",
        "mio",
        "socket2",
        "postgres",
    ];
    let used: Vec<&str> = dependencies
        .lines()
        .filter_map(|l| l.split(['.', '=', ' ']).next())
        .filter(|name| io_crates.contains(name))
        .collect();
    assert!(used.is_empty(), "crates/protocol depends on {used:?}");
    let mut found = Vec::new();
    for file in sources(&root().join("crates/protocol/src")) {
        let code = fs::read_to_string(&file).unwrap();
        for (n, line) in code.lines().enumerate() {
            let code_part = line.split("//").next().unwrap_or_default();
            if ["std::fs", "std::net", "std::process", "File::open"]
                .iter()
                .any(|io| code_part.contains(io))
            {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "protocol does I/O:\n{}", found.join("\n"));
}
