//! Text we write into API fields the API server bounds (Event notes, condition messages): cut
//! at a character boundary, with `…` saying that it was.

/// The API server's limit on an Event's note (1 KiB).
pub const MAX_EVENT_NOTE: usize = 1024;

/// `s` in at most `max` bytes: whole, or cut at a character boundary and ended with `…`.
pub fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max - '…'.len_utf8();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_character_boundary_and_says_so() {
        assert_eq!(truncated("short", 10), "short");
        let cut = truncated(&"é".repeat(600), MAX_EVENT_NOTE);
        assert!(cut.len() <= MAX_EVENT_NOTE, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
    }
}
