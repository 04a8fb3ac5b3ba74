//! Text from the database on an operator's terminal. Ids, subjects, reasons, headers and
//! bodies came from outside: control characters (escape sequences that could rewrite the
//! screen or the title, carriage returns that hide a line) and the characters that reorder
//! text are shown as `\u{1b}`, never obeyed; line breaks as `\n` on one line.

/// `text` safe to print on one line.
pub fn one_line(text: &str) -> String {
    escape_controls(text, false)
}

/// As [`one_line`], keeping line breaks (a pretty-printed body).
pub fn lines(text: &str) -> String {
    escape_controls(text, true)
}

fn escape_controls(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let reorders = matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        );
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_control() || reorders => out.extend(c.escape_unicode()),
            c => out.push(c),
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
