"""What an uploaded file is, decided from its bytes; and its name, made safe to show and send.

The type comes only from the file's first bytes, checked against a short allow-list of
signatures: the client's ``Content-Type`` and file name say nothing we trust. A table of our own
rather than a library: six formats, each a published fixed signature, read in one screen.
"""

from __future__ import annotations

import posixpath
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

SNIFF_BYTES = 132
"""Enough of the head for every signature below (DICOM's sits at offset 128)."""


@dataclass(frozen=True)
class Kind:
    media_type: str
    extension: str
    also: tuple[str, ...] = ()
    """Other extensions a name of this kind may already end with (kept, not doubled)."""


PNG = Kind("image/png", ".png")
JPEG = Kind("image/jpeg", ".jpg", (".jpeg", ".jpe"))
GIF = Kind("image/gif", ".gif")
WEBP = Kind("image/webp", ".webp")
PDF = Kind("application/pdf", ".pdf")
DICOM = Kind("application/dicom", ".dcm", (".dicom",))
ALLOWED = (PNG, JPEG, GIF, WEBP, PDF, DICOM)


def sniff(head: bytes) -> Kind | None:
    """The allowed kind the bytes start as, or None (anything else is refused)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    # PDF readers accept the header anywhere in the first KiB; we accept it only first, so a
    # file that opens as something else (HTML, a ZIP) before it is a PDF is refused.
    if head.startswith(b"%PDF-"):
        return PDF
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    return None


MAX_NAME = 150
"""Characters of a stored file name, extension included."""
_FALLBACK = "attachment"


_RESERVED = set('<>:"|?*')
"""Not allowed in Windows file names; the name is what the download suggests to the client."""


def _visible(character: str) -> bool:
    if character in _RESERVED:
        return False
    # Cc: controls (NUL, CR, LF, ESC ...); Cf: format characters (bidi overrides that make
    # "gpj.exe" read as "exe.jpg"); Zl/Zp: line and paragraph separators.
    return unicodedata.category(character) not in {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def safe_filename(sent: str | None, kind: Kind) -> str:
    """The client's file name as metadata: NFC, its last path segment only, no control or
    format characters nor any Windows refuses, at most ``MAX_NAME`` characters, ending in the
    sniffed kind's extension.

    Never used as a path or a storage key; this is what lists show and downloads suggest.
    """
    name = unicodedata.normalize("NFC", sent or "")
    name = name.replace("\\", "/")
    name = posixpath.basename(name)
    name = "".join(c if _visible(c) else "" for c in name)
    name = " ".join(name.split()).strip(" .")
    # A name that already ends in the kind's extension keeps its own spelling (".JPEG"); any
    # other ("scan.html" that is a PNG) gets the sniffed one after it: "scan.html.png".
    stem, dot, extension = name.rpartition(".")
    if dot and f".{extension.lower()}" in {kind.extension, *kind.also}:
        suffix = f".{extension}"
    else:
        stem, suffix = name, kind.extension
    stem = stem.strip(" .") or _FALLBACK
    return stem[: MAX_NAME - len(suffix)] + suffix


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` and the exact name as ``filename*`` (RFC 6266,
    RFC 8187). Quotes, backslashes and anything outside printable ASCII never reach the
    header unescaped, so a name cannot end the header or add one."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    ascii_name = "".join(c if c.isprintable() and c not in '"\\;' else "_" for c in ascii_name)
    ascii_name = ascii_name.strip() or _FALLBACK
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
