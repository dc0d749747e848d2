"""`pixeltrack distribute` on a plain PostgreSQL: a clear refusal, nothing half done."""

from __future__ import annotations

import pytest

from pixeltrack.cli.main import main


class TestDistributeWithoutCitus:
    """Without the citus extension the command exits 1 and says what is missing."""

    def test_refused(self, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        """Exit 1; the message names the citus extension and how to add the workers."""
        monkeypatch.setenv("DATABASE_URL", db_url)
        assert main(["distribute"]) == 1
        err = capsys.readouterr().err
        assert "the citus extension is not installed in this database" in err
        assert "citus_add_node" in err
