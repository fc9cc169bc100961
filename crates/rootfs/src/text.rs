//! Text from an image made safe for a terminal.
#![forbid(unsafe_code)]

use std::borrow::Cow;

/// Bidirectional controls and zero-width characters: invisible, and able
/// to make shown text read otherwise than it is.
fn invisible(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `s` with control characters (escape sequences among them: ESC, CSI,
/// OSC) and invisible format characters shown as `\x1b` or `\u{202e}`
/// instead of acting on the terminal. With `lines`, newline and tab stay
/// (a multi-line message); without, they are escaped too (a name).
pub fn printable(s: &str, lines: bool) -> Cow<'_, str> {
    let bad = |c: char| (c.is_control() && !(lines && (c == '\n' || c == '\t'))) || invisible(c);
    if !s.chars().any(bad) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            c if !bad(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escapes_what_acts_on_a_terminal() {
        assert_eq!(printable("plain\ttext\n", true), "plain\ttext\n");
        assert_eq!(printable("a\nb", false), "a\\x0ab");
        assert_eq!(printable("\u{1b}[2J\u{202e}x", true), "\\x1b[2J\\u{202e}x");
    }
}
