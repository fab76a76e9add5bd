"""Password hashing and API secrets.

Passwords are low-entropy, so they get a salted, deliberately slow hash (scrypt) whose
parameters travel in the stored string: raising the cost later does not lock anyone out,
old hashes keep verifying with the parameters they were made with.

Bearer tokens and camera keys are 256-bit random values: nobody can guess them, so a fast
sha256 is enough to keep the database from holding a usable secret, and it lets the
service find a token by its hash in one indexed lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt cost: n=2**14, r=8 needs 16 MiB and ~50 ms per hash on one core; slow for an
# attacker with a stolen table, quick enough for a login.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
SALT_BYTES = 16
_SCHEME = "scrypt"
# The largest cost a stored hash may ask for, so a tampered row cannot exhaust memory.
_MAX_N = 2**20
_MAXMEM = 1024 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=_MAXMEM
    )


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` with a fresh random salt, so equal passwords hash apart."""
    if not isinstance(password, str) or not password:
        raise ValueError("a password must be a non-empty string")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """True when `password` matches; a malformed stored hash never matches (it cannot log in)."""
    try:
        scheme, n_s, r_s, p_s, salt_s, digest_s = hashed.split("$")
        if scheme != _SCHEME:
            return False
        n, r, p = int(n_s), int(r_s), int(p_s)
        if not (1 < n <= _MAX_N and 0 < r <= 32 and 0 < p <= 16):
            return False
        salt = base64.b64decode(salt_s, validate=True)
        expected = base64.b64decode(digest_s, validate=True)
        actual = _scrypt(password, salt, n, r, p, len(expected))
    except (ValueError, TypeError, AttributeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_secret(prefix: str) -> str:
    """A random secret shown once, e.g. ``iat_...``; the prefix tells a token from a key."""
    if not prefix.isalnum():
        raise ValueError(f"a secret prefix must be alphanumeric, got {prefix!r}")
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    """Hex sha256 of a high-entropy secret (token or camera key); never use it for passwords."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
