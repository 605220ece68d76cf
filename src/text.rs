//! Quoting outside text in messages: a server's error, a Pushgateway's answer, squeue's
//! stderr. Such text can be long and is not ASCII (label values are quoted back), so it is
//! cut to a bound on a character boundary: `String::truncate` inside a character panics.

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
