use std::net::IpAddr;

/// The address a request came from, as the service decided it (the peer, or a trusted proxy's
/// `X-Forwarded-For` entry): what the per-address lockout counts and the audit trail records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(IpAddr);

impl ClientIp {
    pub fn new(ip: IpAddr) -> Self {
        // An IPv4 client seen through an IPv6 socket counts as the IPv4 address it is.
        Self(ip.to_canonical())
    }

    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::ClientIp;

    #[test]
    fn a_mapped_ipv4_address_is_the_ipv4_address() {
        let mapped: std::net::IpAddr = "::ffff:10.0.0.7"
            .parse()
            .unwrap_or(std::net::IpAddr::from([0; 16]));
        assert_eq!(ClientIp::new(mapped).to_string(), "10.0.0.7");
    }
}
