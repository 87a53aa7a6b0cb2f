//! What a user is found by on MongoDB (issue 32): every distinct substring of three and of five
//! characters of the lower-cased username and email, stored with the user (`username_keys`,
//! `email_keys`) under a multikey index. A searched substring of three or five characters is
//! itself a key, so the index holds exactly the users that contain it; a longer one (or one of
//! four) is looked up by one of its own keys and the candidates are checked in the service.
//! Shorter ones have no key.
//!
//! Beside the keys, every user has a `search_slot`: a number in `[0, SEARCH_SLOTS)` hashed from
//! its id, under its own index. A search the keys cannot serve reads users in ranges of slots;
//! the hash spreads users evenly over the slots whatever their dates or names, so a range holds
//! about the share of users its width says (`created_at` cannot split a bulk import of one date).

/// How many search slots there are (2^24: a million users fill one slot in 16).
pub const SEARCH_SLOTS: i32 = 1 << 24;

/// The search slot of the user with this id: FNV-1a over its 12 bytes, mixed by MurmurHash3's
/// finalizer (ids made together differ in their last bytes only, which FNV alone leaves in its
/// low bits), its top 24 bits. Stored, so it never changes: the same id gives the same slot.
pub fn search_slot(id: &mongodb::bson::oid::ObjectId) -> i32 {
    let mut h = id.bytes().iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    // 24 bits always fit an i32.
    i32::try_from(h >> 40).unwrap_or(0)
}

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
    use super::{probe_key, search_keys, search_slot, SEARCH_SLOTS};
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn a_slot_is_the_same_hash_wherever_it_is_computed() {
        // The values `scripts/scale-bench.sh` computes in Python for these ids.
        for (id, slot) in [
            ("000000000000000000000000", 1_194_382),
            ("5f0000000000000000000001", 2_794_882),
            ("6b15edfd5df4dc7eeca9efc9", 16_057_671),
        ] {
            assert_eq!(
                search_slot(&ObjectId::parse_str(id).expect("an id")),
                slot,
                "{id}"
            );
        }
    }

    #[test]
    fn ids_made_together_spread_evenly_over_the_slots() {
        // Ids of one second from one process differ in their counter only: a bulk import.
        let ids: Vec<ObjectId> = (0..64_000).map(|_| ObjectId::new()).collect();
        let mut shares = [0usize; 64];
        for id in &ids {
            let slot = search_slot(id);
            assert!((0..SEARCH_SLOTS).contains(&slot));
            assert_eq!(slot, search_slot(id), "a slot is a function of the id");
            shares[usize::try_from(slot / (SEARCH_SLOTS / 64)).expect("a share")] += 1;
        }
        // 1,000 expected in each sixty-fourth; a fair spread stays within a few percent.
        for n in shares {
            assert!((850..1150).contains(&n), "{shares:?}");
        }
    }

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
