//! Generated text: token pieces are bytes, stop strings are searched in bytes,
//! and the text is cut before the first stop string.
//!
//! A token's piece can end inside a multi-byte UTF-8 character (byte-level BPE
//! splits emoji and CJK characters over several tokens), so text is kept as
//! bytes until the sequence ends. Searching the bytes of a stop string in valid
//! UTF-8 can only match at character boundaries, so no character is ever cut.

/// The output bytes of one sequence and its stop strings.
#[derive(Clone, Debug, Default)]
pub struct TextOut {
    bytes: Vec<u8>,
    stops: Vec<Vec<u8>>,
    longest_stop: usize,
    /// Bytes already handed out by [`TextOut::take_ready`] (whole characters).
    emitted: usize,
}

impl TextOut {
    /// Empty output that will stop at any of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        let stops: Vec<Vec<u8>> =
            stops.iter().filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()).collect();
        let longest_stop = stops.iter().map(Vec::len).max().unwrap_or(0);
        TextOut { bytes: Vec::new(), stops, longest_stop, emitted: 0 }
    }

    /// Append a token's piece. Returns `true` when a stop string now occurs; the
    /// output is then cut where the earliest one begins.
    pub fn push(&mut self, piece: &[u8]) -> bool {
        if piece.is_empty() {
            return false;
        }
        let old_len = self.bytes.len();
        self.bytes.extend_from_slice(piece);
        if self.stops.is_empty() {
            return false;
        }
        // A new match must end inside the new piece, so it starts at most
        // `longest_stop - 1` bytes before it.
        let from = old_len.saturating_sub(self.longest_stop.saturating_sub(1));
        let window = &self.bytes[from..];
        let earliest = self.stops.iter().filter_map(|stop| find(window, stop)).min();
        match earliest {
            Some(at) => {
                self.bytes.truncate(from + at);
                true
            }
            None => false,
        }
    }

    /// Text that can no longer change, not handed out before: whole characters,
    /// and not the last `longest stop - 1` bytes, which could still begin a stop
    /// string (the output is cut there when it completes).
    pub fn take_ready(&mut self) -> Option<String> {
        let end = self.bytes.len().saturating_sub(self.longest_stop.saturating_sub(1));
        if end <= self.emitted {
            return None;
        }
        let ready = &self.bytes[self.emitted..end];
        let valid = match std::str::from_utf8(ready) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        if valid == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&ready[..valid]).into_owned();
        self.emitted += valid;
        Some(text)
    }

    /// Bytes handed out by [`TextOut::take_ready`]; they are a prefix of
    /// [`TextOut::into_string`]'s text.
    pub fn emitted(&self) -> usize {
        self.emitted
    }

    /// The output so far, as bytes.
    #[cfg(test)]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The final text. An incomplete UTF-8 character at the end (the token limit
    /// fell inside it) is dropped; invalid bytes elsewhere become U+FFFD.
    pub fn into_string(mut self) -> String {
        if let Err(e) = std::str::from_utf8(&self.bytes) {
            if e.error_len().is_none() {
                self.bytes.truncate(e.valid_up_to());
            }
        }
        match String::from_utf8(self.bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_stops_keeps_everything() {
        let mut t = TextOut::new(&[]);
        assert!(!t.push(b"Hello"));
        assert!(!t.push(b", world"));
        assert_eq!(t.into_string(), "Hello, world");
    }

    #[test]
    fn stop_inside_one_piece_cuts_before_it() {
        let mut t = TextOut::new(&stops(&["END"]));
        assert!(!t.push(b"abc "));
        assert!(t.push(b"xENDyz"));
        assert_eq!(t.into_string(), "abc x");
    }

    #[test]
    fn stop_spanning_pieces_is_found() {
        let mut t = TextOut::new(&stops(&["\n\n", "###"]));
        assert!(!t.push(b"one#"));
        assert!(!t.push(b"#"));
        assert!(t.push(b"# two"));
        assert_eq!(t.into_string(), "one");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut t = TextOut::new(&stops(&["cd", "b"]));
        assert!(t.push(b"abcd"));
        assert_eq!(t.into_string(), "a");
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let mut t = TextOut::new(&stops(&[""]));
        assert!(!t.push(b"x"));
        assert_eq!(t.into_string(), "x");
    }

    #[test]
    fn split_characters_join_and_a_cut_character_is_dropped() {
        let snow = "☃".as_bytes(); // three bytes
        let mut t = TextOut::new(&[]);
        t.push(&snow[..1]);
        t.push(&snow[1..]);
        t.push(&snow[..2]);
        assert_eq!(t.into_string(), "☃");
    }

    #[test]
    fn multibyte_stop_string() {
        let mut t = TextOut::new(&stops(&["。"]));
        assert!(!t.push("こんにちは".as_bytes()));
        assert!(t.push("。また".as_bytes()));
        assert_eq!(t.as_bytes(), "こんにちは".as_bytes());
    }

    #[test]
    fn streamed_pieces_add_up_to_the_final_text() {
        // Held back: the last 2 bytes (a stop of 3 could begin there), and a
        // character split over pieces.
        let mut t = TextOut::new(&stops(&["END"]));
        let mut streamed = String::new();
        let pieces: [&[u8]; 5] = [b"Hel", b"lo \xc3", b"\xa9 w", b"orld E", b"ND tail"];
        let mut stopped = false;
        for piece in pieces {
            stopped = t.push(piece);
            if let Some(ready) = t.take_ready() {
                streamed.push_str(&ready);
            }
            if stopped {
                break;
            }
        }
        assert!(stopped);
        let emitted = t.emitted();
        let full = t.into_string();
        assert_eq!(full, "Hello \u{e9} world ");
        streamed.push_str(&full[emitted..]);
        assert_eq!(streamed, full);
    }

    #[test]
    fn nothing_is_held_back_without_stops() {
        let mut t = TextOut::new(&[]);
        t.push(b"abc");
        assert_eq!(t.take_ready().as_deref(), Some("abc"));
        assert_eq!(t.take_ready(), None);
        t.push(b"\xe2\x82");
        assert_eq!(t.take_ready(), None, "half a character waits");
        t.push(b"\xac!");
        assert_eq!(t.take_ready().as_deref(), Some("\u{20ac}!"));
    }
}
