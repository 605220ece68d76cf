//! Outside text: quoting it in messages (a server's error, a Pushgateway's answer,
//! squeue's stderr), and reading a file another user may own. Such text can be long and
//! is not ASCII (label values are quoted back), so it is cut to a bound on a character
//! boundary: `String::truncate` inside a character panics.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Reads at most `limit` bytes of the regular file `path` as text, never through a
/// symlink (root reads files in directories an unprivileged user owns) nor blocking on a
/// FIFO.
pub fn read_plain_file(path: &Path, limit: u64) -> std::io::Result<String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    f.take(limit).read_to_string(&mut text)?;
    Ok(text)
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
pub fn truncate_chars(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let cut = (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    s.truncate(cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_character_boundaries() {
        let mut s = "aü".repeat(200);
        truncate_chars(&mut s, 300);
        assert!(s.len() <= 300 && s.len() >= 298);
        let mut s = "ü".to_string();
        truncate_chars(&mut s, 1);
        assert_eq!(s, "");
        let mut s = "short".to_string();
        truncate_chars(&mut s, 300);
        assert_eq!(s, "short");
    }
}
