use std::net::{IpAddr, Ipv6Addr};

/// The address a request came from, as the service decided it (the peer, or a trusted proxy's
/// `X-Forwarded-For` entry): what the audit trail records, and, through [`ClientIp::counted`],
/// what the per-address lockout and rate limit count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp {
    ip: IpAddr,
    /// `CLIENT_IPV6_PREFIX`: how many leading bits of an IPv6 address name one client.
    ipv6_prefix: u8,
}

/// The default of `CLIENT_IPV6_PREFIX`: one IPv6 host is handed a whole /64 (RFC 4291, SLAAC,
/// privacy addresses), so a /64 is one client.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

impl ClientIp {
    /// `ip` counted with the default IPv6 prefix (/64).
    pub fn new(ip: IpAddr) -> Self {
        Self::with_ipv6_prefix(ip, DEFAULT_IPV6_PREFIX)
    }

    /// `ip`, an IPv6 one counted as its network of `prefix` bits (1–128).
    pub fn with_ipv6_prefix(ip: IpAddr, prefix: u8) -> Self {
        Self {
            // An IPv4 client seen through an IPv6 socket counts as the IPv4 address it is.
            ip: ip.to_canonical(),
            ipv6_prefix: prefix.clamp(1, 128),
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Who the limits count (SPEC 10): an IPv4 address as it is, an IPv6 one as its network
    /// (`2001:db8:1:2::/64`), since a host holds every address of its prefix.
    pub fn counted(&self) -> String {
        match self.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix))
                    .unwrap_or(0);
                format!("{}/{}", Ipv6Addr::from(bits & mask), self.ipv6_prefix)
            }
        }
    }
}

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.ip.fmt(f)
    }
}

/// Who an attempt is judged as (SPEC 10): an unknown client, by its address, against that
/// address's counter and the account's (shared by every unknown client); or a device the owner
/// signed in from (a valid device token), against that device's own counter only, so no
/// stranger's failures can refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptSource {
    Address(ClientIp),
    /// A device token's device id.
    Device(String),
}

impl AttemptSource {
    /// The client's own counter, within the account's keys.
    pub fn client(&self) -> String {
        match self {
            AttemptSource::Address(ip) => ip.counted(),
            AttemptSource::Device(id) => format!("device:{id}"),
        }
    }

    /// The pool the attempt also counts in: `None` for the account's, which every unknown client
    /// shares; a device's pool is its own (and not consulted: its limit is the client's).
    pub fn pool(&self) -> Option<String> {
        match self {
            AttemptSource::Address(_) => None,
            AttemptSource::Device(id) => Some(format!("device:{id}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClientIp;
    use std::net::IpAddr;

    fn parse(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0; 16]))
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_ipv4_address() {
        let client = ClientIp::new(parse("::ffff:10.0.0.7"));
        assert_eq!(client.to_string(), "10.0.0.7");
        assert_eq!(client.counted(), "10.0.0.7");
    }

    #[test]
    fn an_ipv6_client_counts_as_its_prefix() {
        let a = ClientIp::new(parse("2001:db8:1:2:aaaa::1"));
        let b = ClientIp::new(parse("2001:db8:1:2:bbbb:cccc:dddd:eeee"));
        let other = ClientIp::new(parse("2001:db8:1:3::1"));
        assert_eq!(a.counted(), "2001:db8:1:2::/64");
        assert_eq!(a.counted(), b.counted());
        assert_ne!(a.counted(), other.counted());
        assert_eq!(
            a.to_string(),
            "2001:db8:1:2:aaaa::1",
            "the audit keeps the address"
        );
        let whole = ClientIp::with_ipv6_prefix(parse("2001:db8::1"), 128);
        assert_eq!(whole.counted(), "2001:db8::1/128");
        let widest = ClientIp::with_ipv6_prefix(parse("2001:db8::1"), 0);
        assert_eq!(widest.counted(), "::/1");
    }
}
