"""A stock verifier of another ecosystem: PyJWT's PyJWKClient fetches the service's JWK Set and
checks a token with it alone (signature, kid, iss, aud). Usage: verify.py JWKS_URL TOKEN ISSUER
AUDIENCE. Prints {"kid", "alg", "claims"} and exits 0, or prints the error and exits 1."""
import json
import sys

import jwt

url, token, issuer, audience = sys.argv[1:5]
try:
    signing_key = jwt.PyJWKClient(url, cache_keys=False).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["EdDSA", "ES256"],
        issuer=issuer,
        audience=audience,
        options={"require": ["exp", "iss", "aud", "sub"]},
    )
except jwt.PyJWTError as error:
    print(f"{type(error).__name__}: {error}")
    sys.exit(1)
print(json.dumps({"kid": signing_key.key_id, "alg": signing_key.algorithm_name, "claims": claims}))
