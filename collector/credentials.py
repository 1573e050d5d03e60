"""Credentials: random bearer tokens (stored as SHA-256 digests) and scrypt password digests.

Tokens carry 256 random bits, so a fast digest suffices to store them (nothing to guess);
passwords are chosen by people, so they get a memory-hard KDF (scrypt, 16 MiB per try).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

AGENT, SESSION, ENROL, METRICS = "bma_", "bms_", "bme_", "bmm_"
_N, _R, _P = 2**14, 8, 1


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$digest`` (base64)."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(key).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        found = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                               r=int(r), p=int(p), dklen=32, maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, base64.b64decode(key))


# A digest that no password matches: compared against when the user is unknown, so a wrong
# user costs the same time as a wrong password.
DUMMY = hash_password(secrets.token_urlsafe(16))
