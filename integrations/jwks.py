"""Public JWKs of the tenant's signing keys: which key types we take, and the one algorithm
each is pinned to (so a token can never choose a weaker one, `none` or HMAC included)."""

from __future__ import annotations

import re
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

# kty (and curve) -> the algorithm tokens signed with such a key must name.
PINNED_ALG = {("RSA", None): "RS256", ("EC", "P-256"): "ES256", ("OKP", "Ed25519"): "EdDSA"}
PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
RSA_MIN_BITS = 2048
# PROTOCOL section 5: a `kid` is 1 to 64 characters of A-Z a-z 0-9 . _ - (so that it fits a
# URL path segment as it is: `DELETE /api/signing-keys/<kid>/`).
KID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class JwkError(ValueError):
    pass


def parse_public_jwk(jwk: Any) -> tuple[str, str, str, dict[str, Any]]:
    """(kid, kty, alg, the public members only) of a JWK; raises JwkError naming the problem."""
    if not isinstance(jwk, dict):
        raise JwkError("must be a JSON object (a JWK).")
    kid, kty = jwk.get("kid"), jwk.get("kty")
    if not isinstance(kid, str) or not KID_PATTERN.fullmatch(kid):
        raise JwkError("`kid` must be 1 to 64 characters of A-Z a-z 0-9 . _ -")
    if kty not in PUBLIC_MEMBERS:
        raise JwkError("`kty` must be RSA, EC or OKP.")
    if any(member in jwk for member in PRIVATE_MEMBERS):
        raise JwkError("This is a private key: register the public key only.")
    curve = None if kty == "RSA" else jwk.get("crv")
    alg = PINNED_ALG.get((kty, curve))
    if alg is None:
        raise JwkError("EC keys must use P-256 and OKP keys Ed25519.")
    if jwk.get("alg") not in (None, alg):
        raise JwkError(f"A {kty} key here signs with {alg} only.")
    public = {"kty": kty, "kid": kid}
    for member in PUBLIC_MEMBERS[kty]:
        value = jwk.get(member)
        if not isinstance(value, str) or not value or len(value) > 4096:
            raise JwkError(f"`{member}` is missing or malformed.")
        public[member] = value
    try:
        key = jwt.PyJWK(public, algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise JwkError("Not a valid public key.") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < RSA_MIN_BITS:
        raise JwkError(f"RSA keys must have at least {RSA_MIN_BITS} bits.")
    return kid, kty, alg, public
