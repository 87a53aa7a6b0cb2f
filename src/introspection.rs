//! The services allowed to introspect tokens (`INTROSPECTION_CLIENTS`): their credentials,
//! checked in constant time, and each one's rate.
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The clients allowed to introspect (`INTROSPECTION_CLIENTS`), each secret kept as its
/// SHA-256 (compared in constant time), and each client's rate limit.
pub struct IntrospectionClients {
    clients: Vec<(String, [u8; 32])>,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl IntrospectionClients {
    /// `per_second` requests a second for each client, in bursts of as many.
    pub fn new(clients: &[(String, SecretString)], per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        Self {
            clients: clients
                .iter()
                .map(|(id, secret)| {
                    let digest = Sha256::digest(secret.expose_secret().as_bytes());
                    (id.clone(), digest.into())
                })
                .collect(),
            limiter: governor::RateLimiter::keyed(Quota::per_second(rate)),
        }
    }

    /// The client named by HTTP Basic credentials `header`, when its secret is right.
    pub fn authenticate(&self, header: Option<&str>) -> Option<&str> {
        use base64::Engine;
        let (scheme, encoded) = header?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let encoded = encoded.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.clients
            .iter()
            .find(|(known, digest)| known == id && bool::from(digest.ct_eq(&presented)))
            .map(|(known, _)| known.as_str())
    }

    /// Takes one of the client's requests: the seconds to wait when there are none left.
    pub fn take(&self, client: &str) -> Result<(), u64> {
        self.limiter
            .check_key(&client.to_string())
            .map_err(|not_until| {
                let clock = governor::clock::DefaultClock::default();
                not_until
                    .wait_time_from(governor::clock::Clock::now(&clock))
                    .as_secs()
                    .max(1)
            })
    }
}
