//! Email addresses, and the one rule that says when two of them are the same account.
use std::borrow::Cow;

use icu_casemap::CaseMapper;
use icu_normalizer::ComposingNormalizerBorrowed;

/// Who an email address belongs to (SPEC 10): NFKC_Casefold of the trimmed address, that is
/// NFKC, Unicode's full default case folding, NFKC again (Python's
/// `normalize('NFKC', normalize('NFKC', s).casefold())`). The Kelvin sign, the long s, `ß`
/// and `ss`, full-width letters and decomposed accents all meet their plain forms; `ö` and
/// `o` stay apart. Registration, log-in, look-ups, email changes and every per-email counter
/// compare these keys and nothing else: no collation, `NOCASE` or `to_lowercase` decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailKey(String);

impl EmailKey {
    /// The key of any spelling, stored or typed: a pure function of the text, so the key of a
    /// stored email is the key of every spelling that meets it.
    pub fn of(address: &str) -> Self {
        let nfkc = ComposingNormalizerBorrowed::new_nfkc();
        let once = nfkc.normalize(address.trim());
        let folded = CaseMapper::new().fold_string(&once);
        let key = match nfkc.normalize(&folded) {
            Cow::Borrowed(same) => same.to_string(),
            Cow::Owned(changed) => changed,
        };
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EmailKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address: trimmed, lower-cased (as it is stored and shown), RFC 5321/5322-valid,
/// at most 254 characters; with its [`EmailKey`], which decides whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email {
    value: String,
    key: EmailKey,
}

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim().to_lowercase();
        if value.is_empty() {
            return Err("email is required".into());
        }
        if value.chars().count() > Self::MAX_LEN {
            return Err(format!(
                "email must be at most {} characters",
                Self::MAX_LEN
            ));
        }
        // `email_address` implements the RFC grammar; we additionally require a dotted domain
        // part being absent is allowed by the RFC (user@localhost), which we accept too.
        if !email_address::EmailAddress::is_valid(&value) {
            return Err("email is not a valid address".into());
        }
        // Display names ("A <a@b.c>") parse as valid in the crate; an account email is bare.
        if value.contains('<') || value.contains(' ') {
            return Err("email is not a valid address".into());
        }
        let key = EmailKey::of(&value);
        Ok(Self { value, key })
    }

    /// The address as stored and shown.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Whose address this is.
    pub fn key(&self) -> &EmailKey {
        &self.key
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::{Email, EmailKey};

    #[test]
    fn trims_and_lowercases() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").map(|e| e.value),
            Ok("ada@example.com".to_string())
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "a@",
            "A <a@b.c>",
            "a b@c.d",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejects_over_254_characters() {
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    fn key(s: &str) -> String {
        EmailKey::of(s).0
    }

    #[test]
    fn spellings_of_one_address_share_its_key() {
        let plain = key("kasper.ross@example.com");
        for spelling in [
            "KASPER.ROSS@EXAMPLE.COM",
            "\u{212A}asper.ross@example.com",        // KELVIN SIGN
            "kasper.ro\u{17F}s@example.com",         // LATIN SMALL LETTER LONG S
            "kasper.ro\u{DF}@example.com",           // ß
            "kasper.ro\u{1E9E}@example.com",         // capital ẞ
            "\u{FF4B}asper.ross@\u{FF45}xample.com", // full-width k, e
            "  kasper.ross@example.com ",
        ] {
            assert_eq!(key(spelling), plain, "{spelling:?}");
        }
    }

    #[test]
    fn composed_and_decomposed_accents_meet_but_stay_apart_from_plain_letters() {
        assert_eq!(key("r\u{F6}ss@example.com"), key("ro\u{308}ss@example.com"));
        assert_ne!(key("r\u{F6}ss@example.com"), key("ross@example.com"));
        assert_ne!(
            key("kasper.rosss@example.com"),
            key("kasper.ross@example.com")
        );
    }

    #[test]
    fn the_key_is_python_s_nfkc_casefold() {
        // normalize('NFKC', normalize('NFKC', s).casefold()) for these, computed in Python 3.11.
        assert_eq!(key("\u{FB03}@x.io"), "ffi@x.io"); // ﬃ ligature
        assert_eq!(key("\u{2460}@x.io"), "1@x.io"); // circled digit one
        assert_eq!(key("\u{3A3}\u{3C2}@x.io"), "\u{3C3}\u{3C3}@x.io"); // Σς
    }

    #[test]
    fn the_key_of_a_stored_email_is_the_key_of_its_typed_spellings() {
        for typed in [
            "Sam.Ross@X.io",
            "\u{17F}am.Ro\u{DF}@x.io",
            "\u{130}lker@x.io",
        ] {
            let stored = Email::parse(typed).map(|e| e.value).unwrap_or_default();
            assert_eq!(key(&stored), key(typed), "{typed:?}");
        }
    }
}
