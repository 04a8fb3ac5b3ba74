//! The module's boundary with the sales module, checked (docs/ARCHITECTURE.md,
//! "Boundaries"): post-sales reads orders only through the sales read API (the `orders`
//! crate). No string literal in this crate's sources may name a sales table or view, and the
//! crate depends on `orders`, never on `sales`. The sales tables are taken from the
//! migrations, so a table added later is covered without editing this check.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Every table and view the migrations create whose name starts with `sales_`.
fn sales_relations() -> BTreeSet<String> {
    let prefix = ["sales", ""].join("_");
    let mut names = BTreeSet::new();
    let dir = root().join("../../migrations");
    for entry in fs::read_dir(&dir).expect("the migrations directory") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sql") {
            continue;
        }
        let sql = fs::read_to_string(&path).unwrap().to_lowercase();
        let words: Vec<&str> = sql
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if matches!(pair[0], "table" | "view" | "exists") && pair[1].starts_with(&prefix) {
                names.insert(pair[1].to_owned());
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

/// Where `code`'s string literals name one of `relations`: `(line, name)`.
fn named_relations(code: &str, relations: &BTreeSet<String>) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (line, text) in string_literals(code) {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if relations.contains(&word.to_lowercase()) {
                found.push((line, word.to_owned()));
            }
        }
    }
    found
}

fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

#[test]
fn the_migrations_name_the_sales_tables() {
    let relations = sales_relations();
    for table in ["orders", "order_lines", "shipment_lines", "foreign_orders"] {
        let name = ["sales", table].join("_");
        assert!(
            relations.contains(&name),
            "{name} not found in {relations:?}"
        );
    }
}

#[test]
fn the_check_finds_a_sales_table_in_sql_and_not_in_comments() {
    let relations = sales_relations();
    let table = ["sales", "order_lines"].join("_");
    let code = format!(
        "// {table}\n/* {table} */\nconst Q: &str = \"\n  SELECT 1 FROM {table} l\";\nconst R: &str = r#\"x {table}\"#;\nfn f<'a>(c: char) -> bool {{ c == '\"' }}\n"
    );
    assert_eq!(
        named_relations(&code, &relations),
        vec![(3, table.clone()), (5, table.clone())]
    );
    let other = format!("let v = r[\"{}\"];", ["sales", "channel_id"].join("_"));
    assert!(named_relations(&other, &relations).is_empty());
}

#[test]
fn postsales_holds_no_sql_on_sales_tables() {
    let relations = sales_relations();
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let mut found = Vec::new();
    for file in &files {
        let code = fs::read_to_string(file).unwrap();
        for (line, name) in named_relations(&code, &relations) {
            let shown = file.strip_prefix(root()).unwrap_or(file);
            found.push(format!("{}:{line}: {name}", shown.display()));
        }
    }
    assert!(
        found.is_empty(),
        "post-sales reads orders only through the sales read API (crate `orders`), \
         but these literals name a sales table:\n{}",
        found.join("\n")
    );
}

#[test]
fn postsales_depends_on_the_read_api_not_on_sales() {
    let manifest = fs::read_to_string(root().join("Cargo.toml")).unwrap();
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
