from __future__ import annotations

import pytest

from inspect_app.security import hash_password, hash_secret, new_secret, verify_password


def test_a_password_verifies_against_its_own_hash_only() -> None:
    hashed = hash_password("correct horse")
    assert verify_password("correct horse", hashed)
    assert not verify_password("correct hors", hashed)
    assert not verify_password("", hashed)


def test_equal_passwords_hash_apart_because_each_gets_its_own_salt() -> None:
    first, second = hash_password("same password"), hash_password("same password")
    assert first != second
    assert verify_password("same password", first) and verify_password("same password", second)


@pytest.mark.usefixtures("product_password_hashing")
def test_the_stored_string_carries_its_cost_parameters() -> None:
    scheme, n, r, p, _salt, _digest = hash_password("pw12345678").split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)


def test_a_hash_made_with_other_parameters_still_verifies() -> None:
    """Raising the cost later must not lock out users whose hashes used the old cost."""
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"old password", salt=salt, n=2**10, r=4, p=1, dklen=16)
    stored = (
        f"scrypt${2**10}$4$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )
    assert verify_password("old password", stored)
    assert not verify_password("new password", stored)


@pytest.mark.parametrize(
    "stored",
    ["", "plaintext", "bcrypt$1$2$3$c2FsdA==$aGFzaA==", "scrypt$x$8$1$c2FsdA==$aGFzaA==",
     "scrypt$1099511627776$8$1$c2FsdA==$aGFzaA==", "scrypt$16384$8$1$not-base64!$aGFzaA=="],
)  # fmt: skip
def test_a_malformed_stored_hash_never_matches(stored: str) -> None:
    assert not verify_password("anything", stored)


def test_an_empty_password_cannot_be_hashed() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        hash_password("")


def test_secrets_are_random_prefixed_and_hashed_with_sha256() -> None:
    token = new_secret("iat")
    assert token.startswith("iat_") and len(token) > 40
    assert new_secret("iat") != token
    assert hash_secret(token) == hash_secret(token)
    assert len(hash_secret(token)) == 64 and token not in hash_secret(token)


def test_a_secret_prefix_must_be_alphanumeric() -> None:
    with pytest.raises(ValueError, match="alphanumeric"):
        new_secret("a_b")
