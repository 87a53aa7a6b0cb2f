/// An email address: trimmed, lower-cased, RFC 5321/5322-valid, at most 254 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

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
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn trims_and_lowercases() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").map(|e| e.0),
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
}
