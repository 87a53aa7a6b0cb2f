//! What handlers take from a request besides its body: the bearer token as presented, the
//! client's address, and this worker's AccountActor.
use std::future::{ready, Ready};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use actors::account::AccountActor;
use actors::domain::ClientIp;
use actors::mailbox::Mailbox;
use ipnet::IpNet;

use crate::error::ApiError;
use crate::state::AppState;

/// This HTTP worker's AccountActor, where every account workflow runs.
pub type Accounts = web::Data<Mailbox<AccountActor>>;

/// The `Bearer` token of a request, unchecked: the AccountActor has the TokenActor check it.
pub struct Bearer(pub String);

impl FromRequest for Bearer {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(bearer_token(req).map(Bearer))
    }
}

fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("Missing bearer token".into()))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("Malformed Authorization header".into()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(
            "Authorization scheme must be Bearer".into(),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized("Missing bearer token".into()));
    }
    Ok(token.to_string())
}

/// The client's `User-Agent`, as its list of sessions shows it: printable characters only, at
/// most [`UserAgent::MAX_CHARS`] of them (empty when absent).
pub struct UserAgent(pub String);

impl UserAgent {
    pub const MAX_CHARS: usize = 256;
}

impl FromRequest for UserAgent {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let shown = raw
            .chars()
            .filter(|c| !c.is_control())
            .take(Self::MAX_CHARS)
            .collect::<String>();
        ready(Ok(UserAgent(shown.trim().to_string())))
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy
/// (`TRUSTED_PROXIES`), the rightmost `X-Forwarded-For` entry that is not one.
pub struct ClientAddr(pub ClientIp);

impl FromRequest for ClientAddr {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let trusted = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.trusted_proxies.clone());
        ready(Ok(ClientAddr(client_ip(
            req,
            trusted.as_deref().unwrap_or_default(),
        ))))
    }
}

/// The client's address of `req` under the `trusted` proxies (see [`client_addr`]).
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> ClientIp {
    let peer = req.peer_addr().map(|a| a.ip());
    if trusted.is_empty() {
        return client_addr(peer, "", trusted);
    }
    // Lossy: a client's non-ASCII byte must not hide the entries the proxies appended after it.
    let forwarded: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    client_addr(peer, &forwarded.join(","), trusted)
}

/// The rule: the peer, unless it is a trusted proxy; then walk `X-Forwarded-For` from the right
/// (the entry the nearest proxy added) past every trusted proxy, and the first entry that is
/// not one is the client. An entry that is not an address ends the walk at the last trusted hop.
pub fn client_addr(peer: Option<IpAddr>, forwarded: &str, trusted: &[IpNet]) -> ClientIp {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ip| ip.to_canonical());
    let mut client = peer;
    if is_trusted(&peer) {
        for entry in forwarded.rsplit(',').map(str::trim) {
            let Some(ip) = forwarded_ip(entry) else {
                break;
            };
            client = ip;
            if !is_trusted(&ip) {
                break;
            }
        }
    }
    ClientIp::new(client)
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`[v6]:port`, `v4:port`).
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|n| n.parse().ok()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let client = client_addr(ip("203.0.113.9"), "198.51.100.1", &nets(&["10.0.0.0/8"]));
        assert_eq!(client.to_string(), "203.0.113.9");
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        let forwarded = "1.1.1.1, 198.51.100.7, 10.0.0.3";
        let client = client_addr(ip("10.0.0.2"), forwarded, &trusted);
        assert_eq!(client.to_string(), "198.51.100.7");
    }

    #[test]
    fn a_malformed_entry_stops_at_the_last_trusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let client = client_addr(ip("10.0.0.2"), "198.51.100.7, junk", &trusted);
        assert_eq!(client.to_string(), "10.0.0.2");
        let with_port = client_addr(ip("10.0.0.2"), "[2001:db8::1]:443", &trusted);
        assert_eq!(with_port.to_string(), "2001:db8::1");
    }

    #[test]
    fn a_non_ascii_byte_from_the_client_hides_no_entry_a_proxy_appended() {
        let header = actix_web::http::header::HeaderValue::from_bytes(b"\xff junk, 198.51.100.7");
        let mut request = actix_web::test::TestRequest::default();
        if let (Ok(value), Ok(peer)) = (header, "10.0.0.2:4000".parse()) {
            request = request
                .insert_header(("x-forwarded-for", value))
                .peer_addr(peer);
        }
        let client = client_ip(&request.to_http_request(), &nets(&["10.0.0.0/8"]));
        assert_eq!(client.to_string(), "198.51.100.7");
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let client = client_addr(ip("10.0.0.2"), "", &nets(&["10.0.0.0/8"]));
        assert_eq!(client.to_string(), "10.0.0.2");
    }
}
