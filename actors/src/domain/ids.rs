use mongodb::bson::oid::ObjectId;

/// A user's id: a MongoDB ObjectId, written as 24 hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(ObjectId);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() != 24 {
            return Err("user id must be 24 hexadecimal characters".into());
        }
        ObjectId::parse_str(raw)
            .map(Self)
            .map_err(|_| "user id must be 24 hexadecimal characters".into())
    }

    pub fn new() -> Self {
        Self(ObjectId::new())
    }

    pub fn oid(&self) -> ObjectId {
        self.0
    }

    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<ObjectId> for UserId {
    fn from(oid: ObjectId) -> Self {
        Self(oid)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

/// A session's id: a random UUID, written as 32 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        uuid::Uuid::try_parse(raw)
            .map(|u| Self(u.simple().to_string()))
            .map_err(|_| "session id is malformed".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{SessionId, UserId};

    #[test]
    fn user_id_is_exactly_24_hex() {
        assert!(UserId::parse("507f1f77bcf86cd799439011").is_ok());
        assert!(UserId::parse("abc").is_err());
        assert!(UserId::parse("507f1f77bcf86cd7994390111").is_err());
        assert!(UserId::parse("zzzf1f77bcf86cd799439011").is_err());
    }

    #[test]
    fn session_id_round_trips() {
        let sid = SessionId::new();
        assert_eq!(SessionId::parse(sid.as_str()), Ok(sid));
    }
}
