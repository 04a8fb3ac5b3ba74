//! Text from the database on an operator's terminal. Ids, subjects, reasons and bodies came
//! from outside: a control character in them (an escape sequence that moves the cursor,
//! rewrites the title or hides what follows) is shown escaped, never interpreted.

/// `text` with every control character escaped (`\u{1b}`, `\n`), for one line of output.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// `": 1, 2, 3"` after a count of rows acted on, when there are few enough to read.
pub fn id_list(ids: &[i64]) -> String {
    if ids.is_empty() || ids.len() > 20 {
        String::new()
    } else {
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        format!(": {}", ids.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(
            printable("a\u{1b}]0;pwned\u{7}b"),
            "a\\u{1b}]0;pwned\\u{7}b"
        );
        assert_eq!(printable("line\nnext\r"), "line\\nnext\\r");
        assert_eq!(printable("ordinary ünïcode €"), "ordinary ünïcode €");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(id_list(&[1, 2]), ": 1, 2");
        assert_eq!(id_list(&[]), "");
    }
}
