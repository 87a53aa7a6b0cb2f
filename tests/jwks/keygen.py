"""Makes a key pair as an operator would with any standard tool: PKCS#8 private key and SPKI
public key, PEM. Usage: keygen.py EdDSA|ES256 PRIVATE_PEM PUBLIC_PEM."""
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

algorithm, private_path, public_path = sys.argv[1:4]
key = ed25519.Ed25519PrivateKey.generate() if algorithm == "EdDSA" else ec.generate_private_key(ec.SECP256R1())
with open(private_path, "wb") as out:
    out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
with open(public_path, "wb") as out:
    out.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo))
