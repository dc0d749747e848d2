"""Tokens: signed, compact, tamper-evident, rotatable."""

from __future__ import annotations

import base64

import pytest

from pixeltrack.core.tokens import KIND_CLICK, KIND_DOC, KIND_OPEN, Signer, Token, TokenError, link_id_for


def _tamper(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


class TestRoundTrip:
    def test_open_token_carries_job_and_recipient(self) -> None:
        """An open token verifies to exactly its job and recipient."""
        s = Signer("k1")
        assert s.verify(s.mint(KIND_OPEN, 42, 7)) == Token(KIND_OPEN, 42, 7, None)

    @pytest.mark.parametrize("job", [0, 1, 127, 128, 16383, 16384, 2**21 + 5, 2**40])
    @pytest.mark.parametrize("recipient", [None, 0, 126, 127, 128, 16382, 16383, 16384, 2**28, 2**50])
    def test_every_varint_width(self, job: int, recipient: int | None) -> None:
        """Ids of one, two and more varint bytes come back exactly, in every combination."""
        s = Signer("k")
        assert s.verify(s.mint(KIND_OPEN, job, recipient)) == Token(KIND_OPEN, job, recipient, None)
        url = "https://a.example/"
        assert s.verify(s.mint(KIND_CLICK, job, recipient, url)) == Token(KIND_CLICK, job, recipient, url)

    def test_recipient_zero_is_not_none(self) -> None:
        """Recipient 0 and no recipient are different tokens."""
        s = Signer("k1")
        assert s.verify(s.mint(KIND_OPEN, 1, 0)).recipient_id == 0
        assert s.verify(s.mint(KIND_OPEN, 1)).recipient_id is None

    def test_click_token_carries_destination(self) -> None:
        """A click token carries its signed destination URL, unicode included."""
        s = Signer("k1")
        url = "https://example.com/ü?a=1&b=%20"
        assert s.verify(s.mint(KIND_CLICK, 3, 9, url)) == Token(KIND_CLICK, 3, 9, url)

    def test_compact_and_url_safe(self) -> None:
        """An open token for a realistic job is short and uses only URL-safe characters."""
        token = Signer("k1").mint(KIND_OPEN, 123456, 99999)
        assert len(token) == 26  # 1 head + 3 + 3 varint bytes + 12 tag = 19 bytes
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    def test_click_needs_url(self) -> None:
        """Minting a click without a destination is refused."""
        with pytest.raises(ValueError):
            Signer("k").mint(KIND_CLICK, 1, 1)


class TestRejection:
    @pytest.mark.parametrize("index", [0, 1, 2, 5, -1, -12])
    def test_any_flipped_bit_is_rejected(self, index: int) -> None:
        """Changing any byte (kind, job, recipient, URL or tag) fails verification."""
        s = Signer("k1")
        token = s.mint(KIND_CLICK, 5, 6, "https://a.example/x")
        with pytest.raises(TokenError) as err:
            s.verify(_tamper(token, index))
        assert err.value.reason == "bad_signature"

    def test_other_key_rejected(self) -> None:
        """A token signed with a key we do not hold is forged."""
        with pytest.raises(TokenError, match="bad_signature"):
            Signer("mine").verify(Signer("theirs").mint(KIND_OPEN, 1, 1))

    @pytest.mark.parametrize("garbage", ["", "a", "!!!!", "%00%ff", "\x00" * 40, "é" * 30, "A" * 5000])
    def test_garbage_is_malformed(self, garbage: str) -> None:
        """Unparseable input raises TokenError, never anything else."""
        with pytest.raises(TokenError) as err:
            Signer("k").verify(garbage)
        assert err.value.reason in {"malformed", "too_long", "bad_signature"}


class TestRotation:
    def test_previous_key_still_verifies(self) -> None:
        """After rotation, mails signed with the old key still verify."""
        old = Signer("old").mint(KIND_DOC, 8, None)
        assert Signer("new", ("old",)).verify(old) == Token(KIND_DOC, 8, None, None)

    def test_new_tokens_use_current_key(self) -> None:
        """New tokens are signed with the current key, so the old key alone cannot read them."""
        token = Signer("new", ("old",)).mint(KIND_OPEN, 1, 1)
        with pytest.raises(TokenError):
            Signer("old").verify(token)


def test_link_id_is_stable_and_positive() -> None:
    """The same URL always gives the same 63-bit id."""
    a = link_id_for("https://example.com/a")
    assert a == link_id_for("https://example.com/a")
    assert 0 <= a < 2**63
    assert a != link_id_for("https://example.com/b")
