"""Creating triggers: mode rules, filters, targets (SSRF by resolution only), signatures."""

from __future__ import annotations

import asyncpg
import pytest

from aggregator.triggers.signing import digest, sign, verify
from aggregator.triggers.store import TriggerRefused, TriggerSpec, create_trigger
from aggregator.triggers.targets import TargetRefused, check_email, check_webhook
from pixeltrack.core.websites import create_site
from tests.support.hits import add_job

HOOK = "https://hooks.example.com/pixeltrack"  # never contacted: .example never resolves
RESOLVES = "http://127.0.0.1:9/hook"


async def refused(conn: asyncpg.Connection, **spec: object) -> str:
    """The refusal message of a trigger that must not be created."""
    with pytest.raises(TriggerRefused) as caught:
        await create_trigger(conn, TriggerSpec(**spec), allow_private=True)  # type: ignore[arg-type]
    return str(caught.value)


class TestModeRules:
    """Never beyond the mode: per-recipient events only where identity is kept."""

    @pytest.mark.parametrize("mode", ["unique", "anonymous", "blind"])
    @pytest.mark.parametrize("event", ["open.first", "click", "doc.page"])
    async def test_per_recipient_refused(self, conn: asyncpg.Connection, mode: str, event: str) -> None:
        """A per-recipient trigger on a job that keeps no identity is refused, saying why."""
        job = await add_job(conn, mode)
        message = await refused(conn, event=event, job_id=job, webhook=RESOLVES)
        assert f"job {job} is {mode}: it keeps no identity" in message
        assert "only job.threshold (counts) can be triggered" in message

    @pytest.mark.parametrize("mode", ["personal", "permission_personal", "unique", "anonymous", "blind"])
    async def test_threshold_everywhere(self, conn: asyncpg.Connection, mode: str) -> None:
        """job.threshold (counts only) exists for every mode."""
        job = await add_job(conn, mode)
        trigger_id, secret = await create_trigger(
            conn, TriggerSpec(event="job.threshold", job_id=job, webhook=RESOLVES, count=10), allow_private=True)
        assert trigger_id > 0 and secret is not None and secret.startswith("whsec_")
        assert await conn.fetchval("SELECT filters::text FROM triggers") == '{"of": "opens", "count": 10}'

    async def test_personal_click(self, conn: asyncpg.Connection) -> None:
        """A personal job takes a click trigger with a link filter; the secret given is kept."""
        job = await add_job(conn, "permission_personal")
        spec = TriggerSpec(event="click", job_id=job, webhook=RESOLVES, secret="s", link="https://a.example/*")
        assert (await create_trigger(conn, spec, allow_private=True))[1] == "s"

    async def test_site_rules(self, conn: asyncpg.Connection) -> None:
        """site.contact needs a personal site; a site takes no mail event; a mail job no site event."""
        personal = (await create_site(conn, "a.example", "personal"))["job_id"]
        unique = (await create_site(conn, "b.example", "unique"))["job_id"]
        mail = await add_job(conn, "personal")
        await create_trigger(conn, TriggerSpec(event="site.contact", site_id=personal, webhook=RESOLVES,
                                               url_pattern="/pricing*"), allow_private=True)  # fmt: skip
        assert "site.contact needs a personal site" in await refused(
            conn, event="site.contact", site_id=unique, webhook=RESOLVES)
        assert "needs a mail job" in await refused(conn, event="click", site_id=personal, webhook=RESOLVES)
        assert "use --site" in await refused(conn, event="site.contact", job_id=mail, webhook=RESOLVES)
        assert "it is a site" in await refused(conn, event="click", job_id=personal, webhook=RESOLVES)

    async def test_filters(self, conn: asyncpg.Connection) -> None:
        """Filters belong to their event; doc.read needs --seconds, job.threshold --count."""
        job = await add_job(conn, "personal")
        assert "--page does not apply to click" in await refused(conn, event="click", job_id=job,
                                                                  webhook=RESOLVES, page=2)  # fmt: skip
        assert "doc.read needs --seconds" in await refused(conn, event="doc.read", job_id=job, webhook=RESOLVES)
        assert "needs --count" in await refused(conn, event="job.threshold", job_id=job, webhook=RESOLVES)
        assert "no job 999" in await refused(conn, event="click", job_id=999, webhook=RESOLVES)
        assert "one --webhook URL or one --email" in await refused(conn, event="click", job_id=job)
        assert "--secret signs webhooks" in await refused(conn, event="click", job_id=job, email="a@b.example",
                                                          secret="s")  # fmt: skip


class TestTargets:
    """Webhooks only over http(s) to public addresses, unless PIXELTRACK_TRIGGER_ALLOW_PRIVATE=1."""

    @pytest.mark.parametrize("url, reason", [
        ("http://127.0.0.1/hook", "loopback"), ("http://10.1.2.3/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"), ("http://[::1]:8080/", "loopback"),
        ("http://192.168.0.10/", "private"), ("http://[::ffff:10.0.0.1]/", "private"), ("http://0.0.0.0/", "unspecified"),
        ("http://localhost:8080/hook", "loopback"), ("http://100.64.0.1/", "not public"),
    ])  # fmt: skip
    async def test_private_refused(self, url: str, reason: str) -> None:
        """Refused by resolution alone (nothing is sent), naming what the host is."""
        with pytest.raises(TargetRefused, match=f"\\({reason}\\); only public addresses"):
            await check_webhook(url, allow_private=False)

    async def test_private_allowed_by_setting(self) -> None:
        """With the setting a loopback receiver is fine."""
        await check_webhook("http://127.0.0.1:9/hook", allow_private=True)

    @pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://a/", "http:///nohost",
                                     "http://a b.example/", "http://x.example:99999/"])  # fmt: skip
    async def test_not_http(self, url: str) -> None:
        """Only http and https URLs with a host."""
        with pytest.raises(TargetRefused):
            await check_webhook(url, allow_private=True)

    async def test_unresolvable(self) -> None:
        """A host that does not resolve is refused at creation."""
        with pytest.raises(TargetRefused, match="does not resolve"):
            await check_webhook(HOOK, allow_private=False)

    async def test_refused_through_the_store(self, conn: asyncpg.Connection) -> None:
        """create_trigger refuses a private webhook without the setting."""
        job = await add_job(conn, "personal")
        with pytest.raises(TriggerRefused, match="loopback"):
            await create_trigger(conn, TriggerSpec(event="click", job_id=job, webhook="http://127.0.0.1/"))

    @pytest.mark.parametrize("address", ["a@b.example", "first.last+tag@mail.example.org"])
    def test_email_ok(self, address: str) -> None:
        check_email(address)

    @pytest.mark.parametrize("address", ["nobody", "a@b", "a@b.example\r\nBcc: x@y.example", "A <a@b.example>",
                                         "a@b.example,c@d.example", "@b.example"])  # fmt: skip
    def test_email_refused(self, address: str) -> None:
        """One plain address: no names, no lists, no header injection."""
        with pytest.raises(TargetRefused):
            check_email(address)


class TestSignature:
    """Pixeltrack-Signature: t=UNIX,v1=HMAC-SHA256(secret, "{t}.{body}"), as Stripe does."""

    def test_known_value(self) -> None:
        """The digest of a fixed input (computed independently with hmac/hashlib)."""
        import hashlib
        import hmac

        expected = hmac.new(b"whsec_x", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert digest("whsec_x", 1700000000, b"{}") == expected
        assert sign("whsec_x", b"{}", 1700000000) == f"t=1700000000,v1={expected}"

    def test_verify(self) -> None:
        """A receiver accepts its own secret within the tolerance; not another body, secret or a stale t."""
        header = sign("k", b'{"a":1}', 1700000000)
        assert verify("k", header, b'{"a":1}', now=1700000100)
        assert not verify("k", header, b'{"a":2}', now=1700000100)
        assert not verify("other", header, b'{"a":1}', now=1700000100)
        assert not verify("k", header, b'{"a":1}', now=1700000400)
        assert not verify("k", "v1=abc", b'{"a":1}', now=1700000000)
