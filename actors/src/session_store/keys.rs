//! The Redis key schema shared by the TokenActor and the SessionActor. Every key starts with
//! the configured prefix, so several deployments (or tests) can share one Redis.
//!
//! Every script's keys share one hash tag (the part in `{…}`), so each script touches one slot
//! and the store runs on a Redis Cluster as on one primary: the user id for session and token
//! state (`<prefix>{<uid>}:…`), the email's key (SPEC 10) for both lockout counters, the address for the rate
//! limit. The idle index is per user; the sweep finds the users' indexes with `SCAN` on every
//! primary.
use crate::domain::{AttemptSource, ClientIp, EmailKey, SessionId, UserId};

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// An email's key (SPEC 10) as a hash tag: `%`, `{` and `}` percent-encoded, so the tag is
/// exactly the key (an RFC-valid address may hold braces, which would cut the tag short).
fn email_tag(email: &EmailKey) -> String {
    let mut tag = String::with_capacity(email.as_str().len());
    for c in email.as_str().chars() {
        match c {
            '%' => tag.push_str("%25"),
            '{' => tag.push_str("%7B"),
            '}' => tag.push_str("%7D"),
            c => tag.push(c),
        }
    }
    tag
}

impl Keys {
    /// `prefix` must hold no `{` or `}` (configuration refuses it): the hash tag must be ours.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn user(&self, uid: &UserId, name: &str) -> String {
        format!("{}{{{}}}:{name}", self.prefix, uid.to_hex())
    }

    /// HASH of one live session: `uid`, `role`, `created`, `seen` (ms), the current access and
    /// refresh `jti`s, the previous refresh `jti` and when it was rotated (for reuse detection
    /// and the grace window), the successor pair given within the grace window, the credential
    /// version `cv`, and the login's `ip` and `ua`.
    pub fn session(&self, uid: &UserId, sid: &SessionId) -> String {
        format!("{}{sid}", self.session_prefix(uid))
    }

    /// The prefix scripts use to build the keys of a user's other sessions.
    pub fn session_prefix(&self, uid: &UserId) -> String {
        self.user(uid, "sess:")
    }

    /// STRING: why a session ended (`logout`, `evicted`, …); kept as long as its refresh token
    /// could live, so a 401 can say why.
    pub fn ended(&self, uid: &UserId, sid: &SessionId) -> String {
        format!("{}{sid}", self.ended_prefix(uid))
    }

    pub fn ended_prefix(&self, uid: &UserId) -> String {
        self.user(uid, "ended:")
    }

    /// ZSET of a user's live sessions, scored by creation time (ms): the oldest is evicted first.
    pub fn user_sessions(&self, uid: &UserId) -> String {
        self.user(uid, "sessions")
    }

    /// ZSET of a user's live sessions scored by last activity (ms): what the idle sweep reads.
    pub fn activity(&self, uid: &UserId) -> String {
        self.user(uid, "seen")
    }

    /// The `SCAN MATCH` pattern of every user's activity index (the prefix's glob characters
    /// escaped).
    pub fn activity_pattern(&self) -> String {
        let mut pattern = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("{*}:seen");
        pattern
    }

    /// The user id of an activity index's key (`None` for a key of another shape).
    pub fn activity_owner(&self, key: &str) -> Option<UserId> {
        let tag = key.strip_prefix(&self.prefix)?.strip_prefix('{')?;
        let uid = tag.strip_suffix("}:seen")?;
        UserId::parse(uid).ok()
    }

    /// STRING: a user's credential version, raised by a password change; a session of an
    /// older version is refused. Kept as long as a session opened before the change could live.
    pub fn credential(&self, uid: &UserId) -> String {
        self.user(uid, "cred")
    }

    /// STRING: an address's theoretical arrival time (ms) for the auth rate limit (GCRA).
    pub fn rate(&self, ip: &ClientIp) -> String {
        format!("{}{{{}}}:rate", self.prefix, ip.counted())
    }

    fn lockout(&self, email: &EmailKey, name: &str) -> String {
        format!("{}{{{}}}:{name}", self.prefix, email_tag(email))
    }

    /// Counter of failed logins for one email within the failure window, in the attempt's pool:
    /// the account's (every unknown client), or a known device's own.
    pub fn login_failures(&self, email: &EmailKey, source: &AttemptSource) -> String {
        match source.pool() {
            None => self.lockout(email, "login_fail"),
            Some(pool) => self.lockout(email, &format!("login_fail#{pool}")),
        }
    }

    /// Counter of failed logins for one email from one client (an address, or a device).
    pub fn login_failures_from(&self, email: &EmailKey, source: &AttemptSource) -> String {
        self.lockout(email, &format!("login_fail|{}", source.client()))
    }

    /// ZSET of the attempts for one email whose password is being checked, scored by start (ms),
    /// in the attempt's pool.
    pub fn login_pending(&self, email: &EmailKey, source: &AttemptSource) -> String {
        match source.pool() {
            None => self.lockout(email, "login_pend"),
            Some(pool) => self.lockout(email, &format!("login_pend#{pool}")),
        }
    }

    /// The same, for one email from one client.
    pub fn login_pending_from(&self, email: &EmailKey, source: &AttemptSource) -> String {
        self.lockout(email, &format!("login_pend|{}", source.client()))
    }

    /// SET of every failure counter of one email (its own, each client's, each device's): what
    /// an administrator lifting the lockout deletes. Outlives each counter it names.
    pub fn login_counters(&self, email: &EmailKey) -> String {
        self.lockout(email, "login_counters")
    }

    /// The start every failure counter key of one email shares.
    pub fn login_failures_prefix(&self, email: &EmailKey) -> String {
        self.lockout(email, "login_fail")
    }

    /// STRING: when (ms) the user's device tokens were last ended; a device token issued
    /// before it is none. Kept as long as a device token lives.
    pub fn devices_ended(&self, uid: &UserId) -> String {
        self.user(uid, "devices_ended")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis Cluster hashes: the first `{…}` with something inside.
    fn tag(key: &str) -> &str {
        let open = key.find('{').expect("valid test input");
        let close = open + key[open..].find('}').expect("valid test input");
        &key[open + 1..close]
    }

    #[test]
    fn each_scripts_keys_share_one_hash_tag() {
        let keys = Keys::new("csum:");
        let uid = UserId::parse("507f1f77bcf86cd799439011").expect("valid test input");
        let sid = SessionId::new();
        let user_keys = [
            keys.session(&uid, &sid),
            keys.ended(&uid, &sid),
            keys.user_sessions(&uid),
            keys.activity(&uid),
            keys.credential(&uid),
            keys.devices_ended(&uid),
        ];
        assert!(
            user_keys.iter().all(|k| tag(k) == uid.to_hex()),
            "{user_keys:?}"
        );
        let email = EmailKey::of("We{i}rd}@Example.com");
        let ip = ClientIp::new("10.0.0.7".parse().expect("valid test input"));
        let mut lockout = Vec::new();
        for source in [
            AttemptSource::Address(ip),
            AttemptSource::Device("d1".into()),
        ] {
            lockout.extend([
                keys.login_failures(&email, &source),
                keys.login_failures_from(&email, &source),
                keys.login_pending(&email, &source),
                keys.login_pending_from(&email, &source),
            ]);
        }
        lockout.push(keys.login_counters(&email));
        assert!(
            lockout
                .iter()
                .all(|k| tag(k) == "we%7Bi%7Drd%7D@example.com"),
            "{lockout:?}"
        );
        assert_eq!(tag(&keys.rate(&ip)), "10.0.0.7");
    }

    #[test]
    fn the_sweep_reads_the_owner_back_from_an_activity_key() {
        let keys = Keys::new("a*b:");
        let uid = UserId::parse("507f1f77bcf86cd799439011").expect("valid test input");
        assert_eq!(keys.activity_owner(&keys.activity(&uid)), Some(uid));
        assert_eq!(keys.activity_owner("a*b:{nope}:seen"), None);
        assert_eq!(keys.activity_pattern(), "a\\*b:{*}:seen");
    }
}
