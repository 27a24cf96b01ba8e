"""Password hashing (argon2id) and opaque bearer secrets stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters
# Verified when an email is unknown, so that a miss costs as much time as a wrong password.
# Made at the first miss, with the parameters then in force: not at import or configuration,
# where every process importing the app (the CLI's, each test's app) would pay for a
# production-cost hash it may never use. That first miss alone costs a hash more.
_dummy_hash: str | None = None


def configure_password_hashing(*, time_cost: int, memory_cost: int, parallelism: int) -> None:
    """argon2id's parameters from the settings, set when the app starts. Hashes stored with
    other parameters still verify; ``password_needs_rehash`` says to replace them."""
    global _hasher, _dummy_hash  # one hasher per process, set at start-up
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    _dummy_hash = None  # made again with these parameters: a miss costs what a check costs


def _dummy() -> str:
    global _dummy_hash  # two first misses at once make two equally good hashes
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def hash_secret(secret: str) -> bytes:
    """Bearer secrets have 256 bits of entropy, so a fast hash is enough (and indexable)."""
    return hashlib.sha256(secret.encode()).digest()


def address_key(email: str) -> str:
    """A store's key for an email address (the log-in back-off's, a reset link's quota) that
    names the address without holding it: a dump of Redis must not list who uses the service.
    Case and surrounding spaces do not make another key. Kept across releases: a changed key
    would forget every count it held."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def secrets_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


SECRET_BYTES = 32


def new_credential(prefix: str, clinic_id: uuid.UUID) -> tuple[str, bytes]:
    """A credential string ``<prefix>_<clinic hex>_<secret>`` and the hash to store.

    The clinic part only routes the lookup into the right tenant (row-level security needs it
    before anything else is known); the secret is what authenticates.
    """
    secret = secrets.token_urlsafe(SECRET_BYTES)
    credential = f"{prefix}_{clinic_id.hex}_{secret}"
    return credential, hash_secret(credential)


def parse_credential(prefix: str, credential: str) -> uuid.UUID | None:
    """The clinic id a credential names, or None when it is not one of ours."""
    parts = credential.split("_", 2)
    if len(parts) != 3 or parts[0] != prefix or len(parts[2]) < SECRET_BYTES:
        return None
    if not re.fullmatch(r"[0-9a-f]{32}", parts[1]):
        return None
    return uuid.UUID(hex=parts[1])
