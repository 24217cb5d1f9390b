//! Text from plugins and from the plugin folder (log messages, stderr, file names) shown in the
//! host's own logs and status: control characters are escaped, so a plugin or a file name
//! cannot forge log lines or terminal output.

use std::{borrow::Cow, path::Path};

/// `text` with every control character (newlines, carriage returns, escape sequences, ...)
/// written as a Rust escape such as `\n` or `\u{1b}`.
pub(crate) fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A path for logs and status: bytes that are not UTF-8 become U+FFFD, control characters
/// are escaped.
pub(crate) fn show_path(path: &Path) -> String {
    escape_control(&path.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("plain text é"), "plain text é");
        assert_eq!(
            escape_control("ok\n2026-12-01T00:00:00Z ERROR forged\r\x1b[2J\0"),
            "ok\\n2026-12-01T00:00:00Z ERROR forged\\r\\u{1b}[2J\\0"
        );
        assert_eq!(show_path(Path::new("/p/a\nb.wasm")), "/p/a\\nb.wasm");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let odd = std::ffi::OsStr::from_bytes(b"/p/\xff\x1b.wasm");
            assert_eq!(show_path(Path::new(odd)), "/p/\u{fffd}\\u{1b}.wasm");
        }
    }
}
