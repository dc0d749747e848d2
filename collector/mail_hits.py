"""Mail hits: open pixels, tracked links and document pages, answered at once.

A handler verifies the token (microseconds, no database), records the hit
(``record.HitRecorder``: one tuple appended to the write buffer) and returns a
prebuilt answer (``answers``). Everything else (client address resolution,
cleaning, ids, timestamps as datetimes) happens in the buffer's flush, once
per batch.
"""

from __future__ import annotations

from aiohttp import web

from collector import answers
from collector.answers import NOT_FOUND, PIXEL, REDIRECT
from collector.record import HitRecorder
from pixeltrack.core.mint import has_control_chars, with_contact
from pixeltrack.core.tokens import KIND_CLICK, KIND_DOC, KIND_OPEN, Signer, TokenError

MAX_PAGE = 100_000


class MailHits:
    """The mail hit handlers of one app: open pixels, tracked links, document pages."""

    def __init__(self, signer: Signer, recorder: HitRecorder) -> None:
        self.signer = signer
        self.record = recorder.record

    def _verify(self, token: str, want: int) -> tuple[int, int | None, str | None, str | None]:
        """(job, recipient, url, reject reason); job 0 when the token is refused."""
        try:
            t = self.signer.verify(token)
        except TokenError as exc:
            return 0, None, None, exc.reason
        if t.kind != want:
            return 0, None, None, "wrong_kind"
        return t.job_id, t.recipient_id, t.url, None

    async def open_pixel(self, request: web.Request) -> web.StreamResponse:
        """GET /o/{token}.gif: an email open. Always the GIF, whatever the token."""
        job, rcpt, _, reason = self._verify(request.match_info["token"].removesuffix(".gif"), KIND_OPEN)
        self.record(request, "open", job, rcpt=rcpt, reason=reason)
        return answers.respond(PIXEL)

    async def doc_page(self, request: web.Request) -> web.StreamResponse:
        """GET /d/{token}/{page}.gif: one page of a tracked document was shown."""
        job, rcpt, _, reason = self._verify(request.match_info["token"], KIND_DOC)
        raw = request.match_info["page"].removesuffix(".gif")
        page = int(raw) if raw.isdecimal() and len(raw) <= 6 else 0
        if not 1 <= page <= MAX_PAGE and reason is None:
            job, rcpt, reason = 0, None, "bad_page"
        self.record(request, "doc", job, rcpt=rcpt, page=page if reason is None else None, reason=reason)
        return answers.respond(PIXEL)

    async def click(self, request: web.Request) -> web.StreamResponse:
        """GET /c/{token}: redirect to the signed destination, or 404. Never an open redirect."""
        token = request.match_info["token"]
        job, rcpt, url, reason = self._verify(token, KIND_CLICK)
        if url is not None and has_control_chars(url):  # only a minting bug could sign such a URL
            job, rcpt, url, reason = 0, None, None, "bad_destination"
        self.record(request, "click", job, rcpt=rcpt, link=url, reason=reason)
        if reason is not None or url is None:
            return answers.respond(NOT_FOUND)
        if rcpt is not None and self.signer.identifies(token):  # personal: the site learns the contact
            url = with_contact(self.signer, url, job, rcpt)
        return answers.respond(REDIRECT, url.encode("utf-8"))


