//! What a user is found by on MongoDB (issue 32): every distinct substring of three and of five
//! characters of the lower-cased username and email, stored with the user (`username_keys`,
//! `email_keys`) under a multikey index. A searched substring of three or five characters is
//! itself a key, so the index holds exactly the users that contain it; a longer one (or one of
//! four) is looked up by one of its own keys and the candidates are checked in the service.
//! Shorter ones have no key.

/// The lengths of the stored substrings.
const LENGTHS: [usize; 2] = [3, 5];

/// The keys of a stored value (lower-cased here, as a search compares), sorted, each once.
pub fn search_keys(value: &str) -> Vec<String> {
    let chars: Vec<char> = value.to_lowercase().chars().collect();
    let mut keys: Vec<String> = LENGTHS
        .iter()
        .flat_map(|&n| chars.windows(n).map(|w| w.iter().collect::<String>()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The key to look a lower-cased needle up by: itself when it is one, else the one of its keys
/// likely held by the fewest users (the most digits, accented and rare letters; the first of
/// equals). `None` for a needle shorter than any key.
pub fn probe_key(needle: &str) -> Option<String> {
    let chars: Vec<char> = needle.chars().collect();
    if LENGTHS.contains(&chars.len()) {
        return Some(needle.to_string());
    }
    let n = LENGTHS.iter().rev().find(|&&n| n <= chars.len())?;
    let weight = |c: &char| match c {
        '0'..='9' => 3,
        'j' | 'k' | 'q' | 'v' | 'w' | 'x' | 'y' | 'z' => 2,
        'a'..='z' => 1,
        c if c.is_alphanumeric() => 3,
        _ => 0,
    };
    let mut best: Option<(u32, &[char])> = None;
    for w in chars.windows(*n) {
        let score = w.iter().map(weight).sum();
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, w));
        }
    }
    best.map(|(_, w)| w.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::{probe_key, search_keys};

    #[test]
    fn a_value_is_keyed_by_its_substrings_of_three_and_five() {
        assert_eq!(
            search_keys("AbCdE"),
            ["abc", "abcde", "bcd", "cde"].map(String::from)
        );
        assert_eq!(search_keys("aaaa"), ["aaa"].map(String::from));
        assert!(search_keys("ab").is_empty());
    }

    #[test]
    fn every_needle_of_three_or_more_is_found_through_a_key_of_every_value_holding_it() {
        let value = "user12345@example.com";
        let keys = search_keys(value);
        let chars: Vec<char> = value.chars().collect();
        for len in 3..=chars.len() {
            for w in chars.windows(len) {
                let needle: String = w.iter().collect();
                let key = probe_key(&needle).expect("a key");
                assert!(keys.contains(&key), "{needle} by {key}");
            }
        }
        assert_eq!(probe_key("ab"), None);
        assert_eq!(probe_key("user12345").as_deref(), Some("12345"));
        assert_eq!(probe_key("abcd").as_deref(), Some("abc"));
    }
}
