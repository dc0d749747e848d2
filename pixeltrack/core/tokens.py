"""Signed, compact, URL-safe tokens for pixels, clicks and document pages.

Layout (before base64url without padding)::

    byte 0      identify flag (bit 7) | version (bits 4-6) | kind (low nibble)
    varint      job_id
    varint      recipient_id + 1   (0 = no recipient: blind jobs, shared documents)
    rest        click destination URL, UTF-8 (clicks only)
    12 bytes    keyed BLAKE2b tag over everything before it

The tag covers job, recipient, destination and kind, so none can be changed.
Verification tries the current key, then previous ones (key rotation), with a
constant-time comparison; it costs a few microseconds and no database lookup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from binascii import a2b_base64
from dataclasses import dataclass
from functools import partial
from hmac import compare_digest
from typing import Any, NamedTuple

VERSION = 1
TAG_BYTES = 12
MAX_TOKEN_CHARS = 4096

# base64url to base64 for a2b_base64; "+", "/" and "=" of the plain alphabet
# become "!", which strict decoding refuses: one spelling per token.
_URLSAFE = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING = (b"", b"===", b"==", b"=")  # by length modulo 4 (1 is never valid)

KIND_OPEN = 1
KIND_CLICK = 2
KIND_DOC = 3
KIND_CONTACT = 4  # signed contact parameter added to click destinations (website tracking)
# A site key: job_id is the site, the recipient slot carries the SITE_* flags
# the collector applies on the request path (no database lookup).
KIND_SITE = 5
KIND_NAMES = {KIND_OPEN: "open", KIND_CLICK: "click", KIND_DOC: "doc", KIND_CONTACT: "contact", KIND_SITE: "site"}
# Set (under the tag) on clicks that may name their recipient to the
# destination website: personal jobs, consenting permission_personal
# recipients. Decided when minting, so the redirect needs no database.
IDENTIFY = 0x80

# Site-key flags (a bit set; the snippet reads them from the key too).
SITE_COOKIELESS = 1   # no cookie at all: visitors only as a daily salted hash
SITE_SPA_HASH = 2     # hash changes are page views (hash-routed single-page apps)
SITE_DNT_BLIND = 4    # Do Not Track / GPC: track blind instead of not at all
SITE_DNT_IGNORE = 8   # Do Not Track / GPC: no effect
SITE_UNIQUE = 16      # mode unique (neither mode bit: personal)
SITE_BLIND = 32       # mode blind


class Token(NamedTuple):
    """What a verified token says."""

    kind: int
    job_id: int
    recipient_id: int | None
    url: str | None


# Token(...) runs the NamedTuple's Python-level __new__; this is the same tuple made in C.
_token = partial(tuple.__new__, Token)


class TokenError(ValueError):
    """A token that is not to be believed; ``reason`` is the metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    if pos < len(data) and data[pos] < 0x80:  # one byte: the common case for recipients and small jobs
        return data[pos], pos + 1
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise TokenError("malformed")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def link_id_for(url: str) -> int:
    """Stable 63-bit id of a destination URL within a job (no registry needed)."""
    digest = hashlib.blake2b(url.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(frozen=True)
class Signer:
    """Mints and verifies tokens with one current key and any previous ones."""

    secret: str
    previous: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Keyed once: copying a keyed state costs less than keying per token.
        keyed = tuple(hashlib.blake2b(key=_key(s), digest_size=TAG_BYTES) for s in (self.secret, *self.previous))
        object.__setattr__(self, "_keys", keyed)

    @staticmethod
    def _tag(keyed: Any, payload: bytes) -> bytes:
        h = keyed.copy()
        h.update(payload)
        return h.digest()

    def mint(self, kind: int, job_id: int, recipient_id: int | None = None, url: str | None = None,
             identify: bool = False) -> str:
        """Return the token for a hit of ``kind`` on ``job_id`` (and recipient, URL, identify flag)."""
        if kind == KIND_CLICK and not url:
            raise ValueError("a click token needs a destination URL")
        if identify and kind != KIND_CLICK:
            raise ValueError("only click tokens can identify their recipient")
        payload = bytes([(IDENTIFY if identify else 0) | VERSION << 4 | kind]) + _varint(job_id)
        payload += _varint(0 if recipient_id is None else recipient_id + 1)
        if url:
            payload += url.encode("utf-8")
        raw = payload + self._tag(self._keys[0], payload)  # type: ignore[attr-defined]
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, token: str) -> Token:
        """Return what ``token`` carries, or raise TokenError with the reason."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("too_long")
        try:
            # base64.urlsafe_b64decode without its Python-level argument
            # handling (half of its cost), and strict: a character outside
            # the base64url alphabet refuses the token. Skipping them (the
            # lenient default) let "/c/!<token>" verify, then broke the
            # identify check on the same string: a 500 per request.
            padded = token.encode("ascii").translate(_URLSAFE) + _PADDING[len(token) % 4]
            raw = a2b_base64(padded, strict_mode=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise TokenError("malformed") from None
        if len(raw) < 3 + TAG_BYTES:
            raise TokenError("malformed")
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        for key in self._keys:  # type: ignore[attr-defined]
            h = key.copy()  # _tag, inlined: this runs for every hit
            h.update(payload)
            if compare_digest(h.digest(), tag):
                return self._parse(payload)
        raise TokenError("bad_signature")

    @staticmethod
    def _parse(payload: bytes) -> Token:
        head = payload[0]
        kind = head & 0x0F
        if (head & ~IDENTIFY) >> 4 != VERSION or kind not in KIND_NAMES:
            raise TokenError("malformed")
        # Varints of one or two bytes (ids below 16384) are read inline: a call
        # per field was a fifth of the check's time.
        end = len(payload)
        job_id, pos = payload[1], 2
        if job_id >= 0x80:
            job_id, pos = _read_varint(payload, 1)
        if pos < end and payload[pos] < 0x80:
            rcpt, pos = payload[pos], pos + 1
        elif pos + 1 < end and payload[pos + 1] < 0x80:
            rcpt, pos = (payload[pos] & 0x7F) | payload[pos + 1] << 7, pos + 2
        else:
            rcpt, pos = _read_varint(payload, pos)
        url = None
        if pos < len(payload):
            try:
                url = payload[pos:].decode("utf-8")
            except UnicodeDecodeError:
                raise TokenError("malformed") from None
        if kind == KIND_CLICK and not url:
            raise TokenError("malformed")
        return _token((kind, job_id, rcpt - 1 if rcpt else None, url))

    @staticmethod
    def identifies(token: str) -> bool:
        """Whether a token that ``verify`` accepted carries the identify flag."""
        head = base64.urlsafe_b64decode(token[:4])
        return bool(head[0] & IDENTIFY)
