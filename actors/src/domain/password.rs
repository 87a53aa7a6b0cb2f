use secrecy::{ExposeSecret, SecretString};

/// A password that bcrypt can take whole: at least 8 characters, at most 72 bytes (bcrypt
/// ignores anything beyond; we refuse rather than truncate silently), and no NUL byte (C
/// implementations, Python's `bcrypt` among them, stop at it). Never printed.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_BYTES: usize = 72;

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(format!(
                "password must be at least {} characters",
                Self::MIN_CHARS
            ));
        }
        Self::parse_for_login(raw)
    }

    /// The rules a stored password could have been created under: only bcrypt's own limits.
    /// Used at login, where a short password is simply a wrong one.
    pub fn parse_for_login(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("password is required".into());
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(format!(
                "password must be at most {} bytes",
                Self::MAX_BYTES
            ));
        }
        if raw.contains('\0') {
            return Err("password must not contain a NUL character".into());
        }
        Ok(Self(SecretString::from(raw.to_string())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::Password;

    #[test]
    fn enforces_bcrypt_limits() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"a".repeat(72)).is_ok());
        assert!(Password::parse(&"a".repeat(73)).is_err());
        // 25 three-byte characters: 25 characters but 75 bytes.
        assert!(Password::parse(&"€".repeat(25)).is_err());
        assert!(Password::parse("abcd\0efgh").is_err());
    }

    #[test]
    fn never_prints() {
        let p = Password::parse("correct horse").map(|p| format!("{p:?}"));
        assert_eq!(p.as_deref(), Ok("Password(***)"));
    }
}
