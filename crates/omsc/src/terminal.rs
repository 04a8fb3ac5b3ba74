//! Text from the database on an operator's terminal. Ids, subjects, reasons, headers and
//! bodies came from outside: control characters (escape sequences that could rewrite the
//! screen or the title, carriage returns that hide a line) and the characters that reorder
//! text are shown as `\u{1b}`, never obeyed; line breaks as `\n` on one line.

// What comes from outside is escaped one way everywhere: the report's functions.
pub use report::text::{plain as one_line, plain_lines as lines, shorten as truncate};

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
    fn escape_sequences_are_shown_not_obeyed() {
        assert_eq!(
            one_line("id\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}31m"),
            "id\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{d}\\u{9b}31m"
        );
        assert_eq!(one_line("a\nb\tc"), "a\\nb\tc");
        assert_eq!(lines("{\n  \"a\": 1\u{7f}\n}"), "{\n  \"a\": 1\\u{7f}\n}");
        assert_eq!(one_line("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(one_line("plain ünïcode ✓"), "plain ünïcode ✓");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(id_list(&[1, 2]), ": 1, 2");
        assert_eq!(id_list(&[]), "");
    }
}
