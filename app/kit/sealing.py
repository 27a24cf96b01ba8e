"""Field-level encryption's primitives (ADR 0028): AES-256-GCM from ``cryptography``, and the
key-encryption keys that wrap each scope's data keys (envelope encryption).

A sealed value is ``format (1 byte) | data key version (4 bytes) | nonce (12) | ciphertext and
tag``; the associated data, which the caller makes from where the value lives (scope, table,
column, row id), is not stored: a value copied to another row, column or clinic does not open.

The key-encryption keys are either a keyring from the settings (``VETIFY_ENCRYPTION_KEYS``,
:class:`Keyring`) or a cloud KMS key (:class:`AwsKms`). Either wraps a data key with the data
key's scope and version as associated data (KMS: its encryption context), so a wrapped key moved
to another clinic does not unwrap. Each wrapping names the key that made it (``local:<id>``,
``aws-kms:<key arn>``), so a rotation can tell which to wrap again, and several keys can unwrap
while one wraps.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.settings import KEY_BYTES

FORMAT = 1
NONCE_BYTES = 12
_HEADER = struct.Struct(">BI")  # format, data key version
LOCAL = "local:"
AWS_KMS = "aws-kms:"


class Unreadable(Exception):
    """A sealed value or a wrapped key that does not open: tampered with, moved to another
    row or clinic, or made with a key this process does not have."""


class KeyWrapper(Protocol):
    """What wraps data keys: :class:`Keyring`, :class:`AwsKms`."""

    @property
    def active(self) -> str:
        """The id (``local:...``, ``aws-kms:...``) of the key that wraps new data keys."""
        ...

    def wrap(self, key: bytes, context: bytes) -> tuple[str, bytes]:
        """``key`` wrapped for ``context``, and the id of the key-encryption key that did it."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        """The data key, or :class:`Unreadable`."""
        ...


@dataclass(frozen=True)
class Keyring:
    """Key-encryption keys by id; the first listed wraps, every one unwraps (during a rotation
    the new key is listed first and the old one after it, until ``vetify keys rotate-kek`` has
    wrapped every data key again)."""

    keys: Mapping[str, bytes]
    first: str

    @classmethod
    def of(cls, keys: dict[str, bytes]) -> Keyring:
        """From :attr:`app.settings.Settings.keyring` (in order: the first wraps)."""
        return cls(keys, next(iter(keys)))

    @property
    def active(self) -> str:
        return LOCAL + self.first

    def wrap(self, key: bytes, context: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return self.active, nonce + AESGCM(self.keys[self.first]).encrypt(nonce, key, context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        key = self.keys.get(kek_id.removeprefix(LOCAL)) if kek_id.startswith(LOCAL) else None
        if key is None:
            raise Unreadable(f"the key {kek_id} is not in VETIFY_ENCRYPTION_KEYS")
        try:
            return AESGCM(key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag:
            raise Unreadable(f"a data key does not unwrap with {kek_id}") from None


class AwsKms:
    """A key in AWS KMS wraps the data keys (``VETIFY_KMS_KEY_ID``); a local keyring, if given,
    still unwraps what it wrapped before (a move from one to the other is a ``rotate-kek``).
    ``client`` is boto3's KMS client: its calls block, and are made only when a data key is
    first made or read by a process."""

    def __init__(self, key_id: str, client: Any, keyring: Keyring | None = None) -> None:
        self.key_id = key_id
        self.client = client
        self.keyring = keyring
        self._arn: str | None = None

    @property
    def active(self) -> str:
        if self._arn is None:  # an alias or a bare id names the key the ARN names
            self._arn = str(self.client.describe_key(KeyId=self.key_id)["KeyMetadata"]["Arn"])
        return AWS_KMS + self._arn

    def wrap(self, key: bytes, context: bytes) -> tuple[str, bytes]:
        made = self.client.encrypt(
            KeyId=self.key_id, Plaintext=key, EncryptionContext=_kms_context(context)
        )
        return AWS_KMS + str(made["KeyId"]), bytes(made["CiphertextBlob"])

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        if kek_id.startswith(LOCAL) and self.keyring is not None:
            return self.keyring.unwrap(kek_id, wrapped, context)
        if not kek_id.startswith(AWS_KMS):
            raise Unreadable(f"the key {kek_id} is neither KMS's nor in the keyring")
        try:
            opened = self.client.decrypt(
                CiphertextBlob=wrapped,
                KeyId=kek_id.removeprefix(AWS_KMS),
                EncryptionContext=_kms_context(context),
            )
        except self.client.exceptions.InvalidCiphertextException:
            raise Unreadable(f"a data key does not unwrap with {kek_id}") from None
        return bytes(opened["Plaintext"])


def _kms_context(context: bytes) -> dict[str, str]:
    return {"vetify": context.decode()}


def field_aad(scope: str, field: str, row_id: uuid.UUID) -> bytes:
    """What a sealed value is bound to: its scope, ``table.column`` and row."""
    return f"vetify:field:{scope}:{field}:{row_id}".encode()


def file_aad(scope: str, what: str, file_id: uuid.UUID) -> bytes:
    """What a sealed file is bound to: its scope, what it is and its id."""
    return f"vetify:file:{scope}:{what}:{file_id}".encode()


def key_context(scope: str, version: int) -> bytes:
    """What a wrapped data key is bound to: its scope and version."""
    return f"vetify:data-key:{scope}:{version}".encode()


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def seal(key: bytes, version: int, plaintext: bytes, aad: bytes) -> bytes:
    header = _HEADER.pack(FORMAT, version)
    nonce = os.urandom(NONCE_BYTES)
    # The header is bound too: a value cannot claim another key version.
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def version_of(sealed: bytes) -> int:
    """The data key version a sealed value was made with, or :class:`Unreadable`."""
    if len(sealed) < _HEADER.size + NONCE_BYTES + 16:
        raise Unreadable("too short to be a sealed value")
    form, version = _HEADER.unpack_from(sealed)
    if form != FORMAT:
        raise Unreadable(f"unknown format {form}")
    return int(version)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    version_of(sealed)
    header = sealed[: _HEADER.size]
    nonce = sealed[_HEADER.size : _HEADER.size + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, sealed[_HEADER.size + NONCE_BYTES :], header + aad)
    except InvalidTag:
        raise Unreadable("the value does not open here (moved, altered or another key)") from None


# Files (an export's archive) are sealed as a stream of segments, so that neither end holds the
# whole file: STREAM (Hoang, Reyhanitabar, Rogaway, Vizár, 2015) over AES-256-GCM. The header
# is ``format 2 | data key version (4) | salt (16) | nonce prefix (7)``. Each file is sealed with
# a key of its own, derived from the data key and the salt (HKDF-SHA256), as Tink's streaming
# AEAD does: however many files a data key seals, no two share a key, so random nonces never
# meet. Segment i is sealed under the nonce ``prefix | i (4 bytes) | 1 if it is the last, else
# 0``, with the header and the caller's associated data bound to each. A segment altered,
# dropped, repeated or reordered does not open, and neither does a stream cut short: its new
# last segment was not sealed as the last.
STREAM_FORMAT = 2
SEGMENT_BYTES = 64 * 1024
"""Plaintext bytes per segment. Not in the header: a file is opened with the size it was
sealed with, so this never changes for format 2 (another size is another format)."""
_STREAM_HEADER = struct.Struct(">BI16s7s")
_TAG_BYTES = 16


def _segment_nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, last)


def _file_key(key: bytes, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=b"vetify:file")
    return AESGCM(derived.derive(key))


def seal_stream(
    key: bytes,
    version: int,
    source: BinaryIO,
    sink: BinaryIO,
    aad: bytes,
    segment: int = SEGMENT_BYTES,
) -> None:
    """``source``, read to its end, sealed into ``sink``."""
    salt, prefix = os.urandom(16), os.urandom(7)
    header = _STREAM_HEADER.pack(STREAM_FORMAT, version, salt, prefix)
    sink.write(header)
    aead, bound = _file_key(key, salt), header + aad
    index, current = 0, source.read(segment)
    while True:
        following = source.read(segment)
        last = not following
        sink.write(aead.encrypt(_segment_nonce(prefix, index, last), current, bound))
        if last:
            return
        index, current = index + 1, following


def stream_version(source: BinaryIO) -> int:
    """The data key version a sealed stream was made with (read from its header, after which
    ``source`` is back where it was), or :class:`Unreadable`."""
    start = source.tell()
    header = source.read(_STREAM_HEADER.size)
    source.seek(start)
    if len(header) < _STREAM_HEADER.size:
        raise Unreadable("too short to be a sealed stream")
    form, version, _, _ = _STREAM_HEADER.unpack(header)
    if form != STREAM_FORMAT:
        raise Unreadable(f"unknown stream format {form}")
    return int(version)


def open_stream(
    key: bytes, source: BinaryIO, sink: BinaryIO, aad: bytes, segment: int = SEGMENT_BYTES
) -> None:
    """A sealed stream opened into ``sink``, or :class:`Unreadable` (what was written to
    ``sink`` before then must be thrown away)."""
    stream_version(source)
    header = source.read(_STREAM_HEADER.size)
    salt, prefix = _STREAM_HEADER.unpack(header)[2:]
    aead, bound, size = _file_key(key, salt), header + aad, segment + _TAG_BYTES
    index, current = 0, source.read(size)
    while True:
        following = source.read(size)
        last = not following
        try:
            sink.write(aead.decrypt(_segment_nonce(prefix, index, last), current, bound))
        except InvalidTag:
            raise Unreadable(
                f"segment {index} does not open (altered, moved, cut short or another key)"
            ) from None
        if last:
            return
        index, current = index + 1, following


def seal_file(key: bytes, version: int, source: Path, sink: Path, aad: bytes) -> None:
    """The file ``source`` sealed into ``sink`` (:func:`seal_stream`)."""
    with source.open("rb") as plain, sink.open("wb") as sealed:
        seal_stream(key, version, plain, sealed, aad)


def file_version(source: Path) -> int:
    """The data key version the file ``source`` was sealed with (:func:`stream_version`)."""
    with source.open("rb") as sealed:
        return stream_version(sealed)


def open_file(key: bytes, source: Path, sink: Path, aad: bytes) -> None:
    """The sealed file ``source`` opened into ``sink``, or :class:`Unreadable` (``sink`` is then
    removed)."""
    try:
        with source.open("rb") as sealed, sink.open("wb") as plain:
            open_stream(key, sealed, plain, aad)
    except Unreadable:
        sink.unlink(missing_ok=True)
        raise
