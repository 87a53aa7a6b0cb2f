//! Settings written as text in the environment (lists, names of policies and algorithms),
//! converted once as they load, with serde's `with`: each reads the text into what it means,
//! saying what the value must be when it does not convert, and prints back the text it was.
use std::net::IpAddr;

use actors::session_store::LimitPolicy;
use actors::token::SigningAlgorithm;
use ipnet::IpNet;
use secrecy::SecretString;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Reads a setting given as text, converted once at load by `parse`, whose error says what the
/// value must be (`Settings::load_from` puts the variable's name before it).
fn parse_text<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    parse(text.trim()).map_err(D::Error::custom)
}

/// The entries of a comma-separated list, blanks left out.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// A list printed back as the comma-separated text it was given as.
fn print_list<S: Serializer, T>(
    list: &[T],
    s: S,
    print: impl Fn(&T) -> String,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&list.iter().map(print).collect::<Vec<_>>().join(","))
}

/// A backend left empty: chosen at load time (see [`Settings::load_from`]).
pub(super) fn empty_is_none<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    T::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(
        text.trim(),
    ))
    .map(Some)
}

pub(super) mod limit_policy {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LimitPolicy, D::Error> {
        parse_text(d, |text| match text {
            "evict_oldest" => Ok(LimitPolicy::EvictOldest),
            "reject" => Ok(LimitPolicy::Reject),
            _ => Err("must be \"evict_oldest\" or \"reject\"".into()),
        })
    }
    pub fn serialize<S: Serializer>(policy: &LimitPolicy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(policy.as_str())
    }
}

pub(super) mod algorithm {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SigningAlgorithm, D::Error> {
        parse_text(d, |text| {
            SigningAlgorithm::parse(text).map_err(|e| format!("is invalid: {e}"))
        })
    }
    pub fn serialize<S: Serializer>(algorithm: &SigningAlgorithm, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(algorithm.as_str())
    }
}

pub(super) mod proxies {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        parse_text(d, |text| {
            entries(text)
                .map(|entry| {
                    entry
                        .parse::<IpNet>()
                        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            format!(
                                "must be a comma-separated list of CIDRs or addresses; \
                                 {entry:?} is neither"
                            )
                        })
                })
                .collect()
        })
    }
    pub fn serialize<S: Serializer>(list: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        print_list(list, s, IpNet::to_string)
    }
}

pub(super) mod cluster_nodes {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, u16)>, D::Error> {
        parse_text(d, |text| {
            entries(text)
                .map(|node| {
                    node.rsplit_once(':')
                        .and_then(|(host, port)| {
                            let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
                            (!host.is_empty()).then(|| (host.to_string(), port))
                        })
                        .ok_or_else(|| {
                            format!("must be a comma-separated list of host:port; {node:?} is not")
                        })
                })
                .collect()
        })
    }
    pub fn serialize<S: Serializer>(list: &[(String, u16)], s: S) -> Result<S::Ok, S::Error> {
        print_list(list, s, |(host, port)| format!("{host}:{port}"))
    }
}

pub(super) mod text_list {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let text = String::deserialize(d)?;
        Ok(entries(&text).map(str::to_string).collect())
    }
    pub fn serialize<S: Serializer>(list: &[String], s: S) -> Result<S::Ok, S::Error> {
        print_list(list, s, String::clone)
    }
}

/// Secrets, comma-separated; printed as `***` when any is set, `null` when none.
pub(super) mod secret_list {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
        let text = String::deserialize(d)?;
        Ok(entries(&text)
            .map(|key| SecretString::from(key.to_string()))
            .collect())
    }
    pub fn serialize<S: Serializer>(list: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
        match list.is_empty() {
            true => s.serialize_none(),
            false => s.serialize_str("***"),
        }
    }
}

/// `id:secret` pairs, comma-separated; printed as `***` when any is set, `null` when none.
pub(super) mod client_list {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, SecretString)>, D::Error> {
        parse_text(d, |text| {
            entries(text)
                .map(|pair| match pair.split_once(':') {
                    Some((id, secret)) if !id.trim().is_empty() && !secret.is_empty() => Ok((
                        id.trim().to_string(),
                        SecretString::from(secret.to_string()),
                    )),
                    _ => Err("must be comma-separated id:secret pairs".to_string()),
                })
                .collect()
        })
    }
    pub fn serialize<S: Serializer>(
        list: &[(String, SecretString)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match list.is_empty() {
            true => s.serialize_none(),
            false => s.serialize_str("***"),
        }
    }
}
