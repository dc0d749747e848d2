"""Minting tracked URLs: a plain function a sending program can import.

    from pixeltrack.core.mint import Minter
    m = Minter(secret="...", base_url="https://t.example.com")
    m.open_url(job_id=7, recipient_id=42)
    m.click_url(job_id=7, recipient_id=42, url="https://shop.example.com/sale")
    m.doc_url(job_id=7, page=3)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pixeltrack.core.tokens import KIND_CLICK, KIND_CONTACT, KIND_DOC, KIND_OPEN, Signer

MAX_URL = 2048
CONTACT_PARAM = "pt_c"  # the signed contact a personal click carries to the website


def has_control_chars(text: str) -> bool:
    """True when ``text`` holds a C0 control character or DEL: never allowed in a destination."""
    return not text.isprintable() and any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def check_destination(url: str) -> str:
    """Refuse destinations that would make a click redirect unsafe or broken."""
    if len(url) > MAX_URL:
        raise ValueError(f"destination longer than {MAX_URL} characters")
    if has_control_chars(url):
        raise ValueError("destination holds control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"destination must be an absolute http(s) URL, got {url!r}")
    return url


@dataclass(frozen=True)
class Minter:
    """Makes open-pixel, click and document-page URLs signed with ``secret``."""

    secret: str
    base_url: str
    signer: Signer = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "signer", Signer(self.secret))
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    def open_url(self, job_id: int, recipient_id: int | None = None) -> str:
        """The 1x1 open pixel for one recipient (no recipient for blind jobs)."""
        return f"{self.base_url}/o/{self.signer.mint(KIND_OPEN, job_id, recipient_id)}.gif"

    def click_url(self, job_id: int, recipient_id: int | None, url: str, identify: bool = False) -> str:
        """A tracked link that redirects to ``url`` and nowhere else.

        ``identify`` (personal tracking only) makes the redirect add the signed
        contact parameter ``pt_c`` so the destination site knows the recipient.
        """
        identify = identify and recipient_id is not None
        token = self.signer.mint(KIND_CLICK, job_id, recipient_id, check_destination(url), identify)
        return f"{self.base_url}/c/{token}"

    def doc_url(self, job_id: int, recipient_id: int | None = None, page: int = 1) -> str:
        """The pixel for one page of a tracked document; the page number is the last part."""
        if page < 1:
            raise ValueError("pages are numbered from 1")
        return f"{self.base_url}/d/{self.signer.mint(KIND_DOC, job_id, recipient_id)}/{page}.gif"

    def merge_rows(self, job_id: int, targets: Iterable[tuple[int | None, str]], urls: list[str],
                   identified: Collection[int] = frozenset(), doc: bool = False) -> Iterator[list[str]]:
        """A mail-merge table: a header, then per recipient the open (or document) pixel and one
        click URL per destination (``identified`` recipients' clicks carry their contact)."""
        yield ["recipient", "open_url", *[f"click_url_{i + 1}" for i in range(len(urls))]]
        for rid, recipient in targets:
            first = self.doc_url(job_id, rid) if doc else self.open_url(job_id, rid)
            identify = rid in identified
            yield [recipient, first, *[self.click_url(job_id, rid, u, identify) for u in urls]]


def with_contact(signer: Signer, url: str, job: int, recipient: int) -> str:
    """``url`` with the signed contact parameter added to its query (fragment kept)."""
    token = signer.mint(KIND_CONTACT, job, recipient)
    base, hash_mark, fragment = url.partition("#")
    sep = "" if base.endswith(("?", "&")) else "&" if "?" in base else "?"
    return f"{base}{sep}{CONTACT_PARAM}={token}{hash_mark}{fragment}"
