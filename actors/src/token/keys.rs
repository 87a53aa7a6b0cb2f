//! The keys tokens are signed and checked with (SPEC 8 and 11): one signing key, the keys that
//! still verify (those a rotation retired, and the next one, published before it signs), and the
//! public ones as a JWK Set for other services. Built once at start-up; `jsonwebtoken` reads the
//! PEM files and makes the JWKs (RFC 7517), so no key handling is written here.
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};

/// `JWT_ALGORITHM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// A shared secret (`JWT_SECRET_KEY`): the default, as the seed's clients expect; only a
    /// holder of the secret can check a token, so the JWK Set is empty.
    Hs256,
    /// Ed25519.
    EdDsa,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl SigningAlgorithm {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "HS256" => Ok(Self::Hs256),
            "EdDSA" => Ok(Self::EdDsa),
            "ES256" => Ok(Self::Es256),
            other => Err(format!("{other:?} is not one of HS256, EdDSA, ES256")),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::EdDsa => Algorithm::EdDSA,
            Self::Es256 => Algorithm::ES256,
        }
    }
}

/// A token's `kid`: the first 8 bytes of SHA-256 over a fixed label and the key (a secret, or a
/// public key's JWK parameters), in hex. It names the key without revealing a secret (nor
/// anything that helps guess it).
pub fn key_id(key: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"cs-user-management jwt kid\0")
        .chain_update(key)
        .finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A key that verifies: its id, algorithm and how its tokens are checked.
struct Verifier {
    kid: String,
    key: DecodingKey,
    validation: Validation,
}

/// The signing key, every key that verifies, and the published JWK Set.
pub struct SigningKeys {
    algorithm: SigningAlgorithm,
    signing: EncodingKey,
    kid: String,
    /// The current key first; then the next and the previous ones, tried by `kid` only.
    verifiers: Vec<Verifier>,
    /// `GET /.well-known/jwks.json`, serialized once.
    jwks: String,
}

/// A token's `aud` by its kind: an access token names the service's audience; refresh and
/// device tokens name their own (`<audience>/refresh`, `<audience>/device`), so another service
/// checking `aud` against the JWK Set never takes one for an access token.
pub fn audience_of(audience: &str, typ: &str) -> String {
    match typ {
        "access" => audience.to_string(),
        other => format!("{audience}/{other}"),
    }
}

/// What checks a token beyond its signature: `exp`, `iss`, and `aud` (one of the three kinds'
/// audiences; the caller then matches it to the token's kind) when the token has one (tokens
/// signed with HS256 before this version have none; every token signed with a public key must
/// carry it).
fn validation(algorithm: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = 0;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&["access", "refresh", "device"].map(|t| audience_of(audience, t)));
    if algorithm == Algorithm::HS256 {
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
    } else {
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    }
    validation
}

/// A public key read from a PEM file: Ed25519 or P-256, whichever the file holds (another curve,
/// P-384 say, is refused: its tokens would be published as ES256 and fail everywhere).
fn public_key(pem: &[u8]) -> Result<(SigningAlgorithm, DecodingKey, Jwk), String> {
    let (algorithm, key) = DecodingKey::from_ed_pem(pem)
        .map(|k| (SigningAlgorithm::EdDsa, k))
        .or_else(|_| DecodingKey::from_ec_pem(pem).map(|k| (SigningAlgorithm::Es256, k)))
        .map_err(|e| format!("not an Ed25519 or P-256 public key in PEM: {e}"))?;
    let jwk = Jwk::from_decoding_key(&key, Some(algorithm.jwt())).map_err(|e| e.to_string())?;
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve != EllipticCurve::P256 => Err(format!(
            "an EC public key on {:?}: only P-256 (ES256) is used",
            ec.curve
        )),
        _ => Ok((algorithm, key, jwk)),
    }
}

/// The published form of a public key, named and marked for signatures.
fn published(mut jwk: Jwk, kid: &str) -> Jwk {
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk
}

/// A public key's id: [`key_id`] over its JWK parameters (the same key, the same id, whichever
/// file or form it came from).
fn public_kid(jwk: &Jwk) -> Result<String, String> {
    let parameters = serde_json::to_vec(&jwk.algorithm).map_err(|e| e.to_string())?;
    Ok(key_id(&parameters))
}

impl SigningKeys {
    /// HS256 with `secret`; `previous` secrets still verify (SPEC 8). The JWK Set is empty.
    pub fn hmac(secret: &[u8], previous: &[&[u8]], issuer: &str, audience: &str) -> Self {
        let kid = key_id(secret);
        let check = || validation(Algorithm::HS256, issuer, audience);
        let mut verifiers = vec![Verifier {
            kid: kid.clone(),
            key: DecodingKey::from_secret(secret),
            validation: check(),
        }];
        verifiers.extend(
            previous
                .iter()
                .map(|s| (key_id(s), s))
                .filter(|(id, _)| *id != kid)
                .map(|(kid, s)| Verifier {
                    kid,
                    key: DecodingKey::from_secret(s),
                    validation: check(),
                }),
        );
        Self {
            algorithm: SigningAlgorithm::Hs256,
            signing: EncodingKey::from_secret(secret),
            kid,
            verifiers,
            jwks: r#"{"keys":[]}"#.to_string(),
        }
    }

    /// `algorithm` (EdDSA or ES256) with the private key `private_pem` (PKCS#8); the public keys
    /// `previous_pems` (retired by a rotation) and `next_pem` (about to sign) verify and are
    /// published; `previous_secrets` (HS256 keys retired by the switch to a public key) verify
    /// and are not published.
    pub fn asymmetric(
        algorithm: SigningAlgorithm,
        private_pem: &[u8],
        previous_pems: &[Vec<u8>],
        next_pem: Option<&[u8]>,
        previous_secrets: &[&[u8]],
        issuer: &str,
        audience: &str,
    ) -> Result<Self, String> {
        let alg = algorithm.jwt();
        let signing = match algorithm {
            SigningAlgorithm::EdDsa => EncodingKey::from_ed_pem(private_pem),
            SigningAlgorithm::Es256 => EncodingKey::from_ec_pem(private_pem),
            SigningAlgorithm::Hs256 => return Err("HS256 signs with a secret, not a key".into()),
        }
        .map_err(|e| {
            format!(
                "the private key is not a PKCS#8 {} key: {e}",
                algorithm.as_str()
            )
        })?;
        let current = Jwk::from_encoding_key(&signing, alg).map_err(|e| {
            format!(
                "the private key's public part cannot be read ({e}); an Ed25519 key must be \
                 PKCS#8 v1, the private key alone, as `openssl genpkey -algorithm ed25519` \
                 writes it"
            )
        })?;
        let kid = public_kid(&current)?;
        let mut public = vec![published(current.clone(), &kid)];
        let mut verifiers = vec![Verifier {
            kid: kid.clone(),
            key: DecodingKey::from_jwk(&current).map_err(|e| e.to_string())?,
            validation: validation(alg, issuer, audience),
        }];
        let others = next_pem
            .into_iter()
            .chain(previous_pems.iter().map(Vec::as_slice));
        for pem in others {
            let (algorithm, key, jwk) = public_key(pem)?;
            let id = public_kid(&jwk)?;
            if verifiers.iter().any(|v| v.kid == id) {
                continue;
            }
            public.push(published(jwk, &id));
            verifiers.push(Verifier {
                kid: id,
                key,
                validation: validation(algorithm.jwt(), issuer, audience),
            });
        }
        for secret in previous_secrets {
            let id = key_id(secret);
            verifiers.push(Verifier {
                kid: id,
                key: DecodingKey::from_secret(secret),
                validation: validation(Algorithm::HS256, issuer, audience),
            });
        }
        let jwks = serde_json::to_string(&JwkSet { keys: public }).map_err(|e| e.to_string())?;
        Ok(Self {
            algorithm,
            signing,
            kid,
            verifiers,
            jwks,
        })
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The signing key's id, written in every header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn signing(&self) -> (&EncodingKey, Algorithm) {
        (&self.signing, self.algorithm.jwt())
    }

    /// The JWK Set of the public keys (current, next, previous): empty under HS256.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The key that checks a token whose header names `kid` with `alg` (none: the current key,
    /// for tokens signed before keys had ids). A header whose algorithm is not its key's gets
    /// none, so a token cannot choose how it is checked.
    pub(crate) fn verifier(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Option<(&DecodingKey, &Validation)> {
        let verifier = match kid {
            Some(kid) => self.verifiers.iter().find(|v| v.kid == kid)?,
            None => self.verifiers.first()?,
        };
        verifier
            .validation
            .algorithms
            .contains(&alg)
            .then_some((&verifier.key, &verifier.validation))
    }
}
