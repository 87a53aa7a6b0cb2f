/// A username as given: 3 to 30 characters of `[A-Za-z0-9_]`. Uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let len = raw.chars().count();
        if !(3..=30).contains(&len) {
            return Err("username must be 3 to 30 characters".into());
        }
        if !raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("username may contain only letters, digits and underscores".into());
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-cased copy stored beside it for case-insensitive uniqueness and search.
    pub fn lowercase(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::Username;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(Username::parse("Ada_Lovelace_1815").is_ok());
    }

    #[test]
    fn rejects_bad_lengths_and_characters() {
        for bad in ["ab", &"a".repeat(31), "ada lovelace", "ada-l", "ädä", "a$b"] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
