//! What handlers take from a request besides its body: the bearer token as presented, the
//! client's address, and this worker's AccountActor.
use std::future::{ready, Ready};
use std::net::{IpAddr, SocketAddr};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use actors::account::AccountActor;
use actors::domain::{ClientIp, UserId};
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
        .ok_or_else(|| ApiError::missing_token("Missing bearer token"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::missing_token("Malformed Authorization header"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::missing_token(
            "Authorization scheme must be Bearer",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::missing_token("Missing bearer token"));
    }
    Ok(token.to_string())
}

/// The user a path names (`{user_id}`): 24 hexadecimal characters, else 400.
pub struct TargetUser(pub UserId);

impl FromRequest for TargetUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req.match_info().get("user_id").unwrap_or_default();
        ready(
            UserId::parse(raw)
                .map(TargetUser)
                .map_err(ApiError::BadRequest),
        )
    }
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
            .filter(|c| !c.is_control() && !is_bidi_control(*c))
            .take(Self::MAX_CHARS)
            .collect::<String>();
        ready(Ok(UserAgent(shown.trim().to_string())))
    }
}

/// The explicit bidirectional formatting characters (Unicode's `Bidi_Control`): stored in a
/// User-Agent they would reorder how a sessions list or an audit view shows the text around it.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The client's address: the peer's, or, when the peer is a trusted proxy
/// (`TRUSTED_PROXIES`), the rightmost `X-Forwarded-For` entry that is not one.
pub struct ClientAddr(pub ClientIp);

impl FromRequest for ClientAddr {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    /// A request whose peer address cannot be read (the client reset the connection while it
    /// was accepted) is refused rather than counted under a shared placeholder address, which
    /// would give every such client one lockout budget and one rate limit (SPEC 10).
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            client_ip(req)
                .map(ClientAddr)
                .ok_or_else(|| ApiError::BadRequest("the client's address is unknown".into())),
        )
    }
}

/// The client's address of `req` under the service's `TRUSTED_PROXIES` and
/// `CLIENT_IPV6_PREFIX`, or `None` when the peer's address cannot be read.
pub fn client_ip(req: &HttpRequest) -> Option<ClientIp> {
    let state = req.app_data::<web::Data<AppState>>();
    let trusted = state.map(|s| s.trusted_proxies.clone());
    let trusted = trusted.as_deref().unwrap_or_default();
    let prefix = state.map_or(actors::domain::DEFAULT_IPV6_PREFIX, |s| s.ipv6_prefix);
    let peer = req.peer_addr()?.ip();
    let client = if trusted.is_empty() {
        peer.to_canonical()
    } else {
        client_addr(peer, &forwarded(req), trusted)
    };
    Some(ClientIp::with_ipv6_prefix(client, prefix))
}

/// Every `X-Forwarded-For` header of `req`, joined. Lossy: a client's non-ASCII byte must not
/// hide the entries the proxies appended after it.
fn forwarded(req: &HttpRequest) -> String {
    let entries: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    entries.join(",")
}

/// The rule: the peer, unless it is a trusted proxy; then walk `X-Forwarded-For` from the right
/// (the entry the nearest proxy added) past every trusted proxy, and the first entry that is
/// not one is the client. An entry that is not an address ends the walk at the last trusted hop.
pub fn client_addr(peer: IpAddr, forwarded: &str, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
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
    client
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

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
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
        let trusted = nets(&["10.0.0.0/8"]);
        let request = request.to_http_request();
        let client = client_addr(ip("10.0.0.2"), &forwarded(&request), &trusted);
        assert_eq!(client.to_string(), "198.51.100.7");
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let client = client_addr(ip("10.0.0.2"), "", &nets(&["10.0.0.0/8"]));
        assert_eq!(client.to_string(), "10.0.0.2");
    }
}
