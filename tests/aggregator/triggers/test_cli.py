"""`pixeltrack trigger create | list | deliveries | replay | delete`."""

from __future__ import annotations

import pytest

from tests.cli.test_cli import env, query, run  # noqa: F401  (env is a fixture)

HOOK = "http://127.0.0.1:9/hook"
EVENT = """
INSERT INTO trigger_events (event_id, trigger_id, event_key, type, occurred_at, created_at, body, status, attempts,
                            next_at, retry_until, last_error)
VALUES ('00000000-0000-4000-8000-000000000001', 1, 'hit:x', 'click', '2026-01-02 03:04:05+00',
        '2026-01-02 03:06:05+00', '{}', 'pending', 1, '2026-01-02 03:06:15+00', '2026-01-03 03:06:05+00', 'HTTP 503')
"""
ATTEMPT = "INSERT INTO trigger_attempts VALUES (1, 1, '2026-01-02 03:06:05+00', 0.0123, false, 503, 'HTTP 503')"


class TestTriggerCommands:
    def test_create_refused(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
        """A click trigger on a unique job, and a webhook to loopback without the setting: exit 1, reason given."""
        run(capsys, "job", "create", "--name", "n", "--mode", "unique")
        code, _, err = run(capsys, "trigger", "create", "--job", "1", "--on", "click", "--webhook", HOOK)
        assert code == 1 and "job 1 is unique: it keeps no identity" in err
        run(capsys, "job", "create", "--name", "p", "--mode", "personal")
        code, _, err = run(capsys, "trigger", "create", "--job", "2", "--on", "click", "--webhook", HOOK)
        assert code == 1 and "127.0.0.1 (loopback); only public addresses may receive events" in err
        assert query(env, "SELECT count(*) FROM triggers") == [(0,)]

    def test_create_list_delete(self, env: str, capsys: pytest.CaptureFixture[str],  # noqa: F811
                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
        """create prints the id (the secret made on stderr); list shows it; delete removes it."""
        monkeypatch.setenv("PIXELTRACK_TRIGGER_ALLOW_PRIVATE", "1")
        run(capsys, "job", "create", "--name", "p", "--mode", "personal")
        code, out, err = run(capsys, "trigger", "create", "--job", "1", "--on", "click", "--link", "https://a.example/*",
                             "--webhook", HOOK)  # fmt: skip
        assert (code, out) == (0, "1\n") and "signing secret" in err and "whsec_" in err
        assert run(capsys, "trigger", "create", "--job", "1", "--on", "open.first", "--email", "ops@example.org")[1] == "2\n"
        lines = run(capsys, "trigger", "list")[1].splitlines()
        assert lines[1].split() == ["1", "job", "1", "click", "0", "0", "0", "link=https://a.example/*", "->", "webhook", HOOK]
        assert lines[2].split() == ["2", "job", "1", "open.first", "0", "0", "0", "-", "->", "email", "ops@example.org"]
        assert run(capsys, "trigger", "delete", "2")[1] == "deleted trigger 2\n"
        assert run(capsys, "trigger", "delete", "2")[0] == 1
        assert query(env, "SELECT trigger_id FROM triggers") == [(1,)]

    def test_deliveries_and_replay(self, env: str, capsys: pytest.CaptureFixture[str],  # noqa: F811
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
        """deliveries lists status, next retry and each attempt; replay queues a delivery again."""
        monkeypatch.setenv("PIXELTRACK_TRIGGER_ALLOW_PRIVATE", "1")
        run(capsys, "job", "create", "--name", "p", "--mode", "personal")
        run(capsys, "trigger", "create", "--job", "1", "--on", "click", "--webhook", HOOK)
        query(env, EVENT)
        query(env, ATTEMPT)
        lines = run(capsys, "trigger", "deliveries", "--trigger", "1")[1].splitlines()
        assert lines[1].split() == ["1", "1", "click", "pending", "1", "2026-01-02", "03:06:15",
                                    "00000000-0000-4000-8000-000000000001"]  # fmt: skip
        assert lines[2].strip() == "attempt 1 at 2026-01-02 03:06:05, 0.012 s, failed HTTP 503: HTTP 503"
        assert run(capsys, "trigger", "deliveries", "--trigger", "2")[1].count("\n") == 1
        assert run(capsys, "trigger", "replay", "1")[1] == "delivery 1 queued again\n"
        assert run(capsys, "trigger", "replay", "7")[0] == 1
        [(status, left)] = query(env, "SELECT status, retry_until - next_at FROM trigger_events")
        assert (status, left.total_seconds()) == ("pending", 86400)
