"""`pixeltrack site create|list`, `report --site` and identity on minted clicks."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest

from pixeltrack.core.tokens import KIND_CLICK, KIND_SITE, SITE_BLIND, SITE_COOKIELESS, SITE_DNT_BLIND, Signer, Token
from tests.cli.test_cli import env, query, run  # noqa: F401  (env is a fixture)
from tests.conftest import TEST_SECRET


class TestSiteCreate:
    def test_prints_key_and_html(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
        """site create prints the id, the signed key with the site's flags and the exact tag to paste."""
        code, out, _ = run(capsys, "site", "create", "--domain", "Example.COM", "--mode", "blind", "--dnt", "blind",
                           "--cookieless")
        lines = out.splitlines()
        key = lines[1].removeprefix("key: ")
        assert (code, lines[0], lines[2]) == (0, "site 1 (example.com, blind)", "paste into every page:")
        assert lines[3] == f'<script async src="https://t.example/t.js" data-site="{key}"></script>'
        assert Signer(TEST_SECRET).verify(key) == Token(KIND_SITE, 1, SITE_BLIND | SITE_DNT_BLIND | SITE_COOKIELESS, None)
        assert query(env, "SELECT kind, mode, name FROM jobs") == [("site", "blind", "example.com")]
        assert query(env, "SELECT domain, dnt_policy, cookieless, spa_hash FROM sites") == [("example.com", "blind", True, False)]

    def test_list_and_bad_mode(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
        """site list shows each site's settings; a mail-only mode is refused by the parser."""
        run(capsys, "site", "create", "--domain", "a.example", "--mode", "personal", "--spa-hash")
        lines = run(capsys, "site", "list")[1].splitlines()
        assert lines[1].split()[:6] == ["1", "personal", "off", "false", "true", "a.example"]
        with pytest.raises(SystemExit):
            run(capsys, "site", "create", "--domain", "a.example", "--mode", "anonymous")

    def test_report_json(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
        """report --site --format json on a site with no views yet: zeros and an empty contact list."""
        run(capsys, "site", "create", "--domain", "a.example", "--mode", "personal")
        code, out, _ = run(capsys, "report", "--site", "1", "--format", "json")
        data = orjson.loads(out)
        assert (code, data["site"], data["mode"], data["pageviews"], data["visitors"], data["contacts"]) == (0, 1, "personal", 0, 0, [])
        assert run(capsys, "report", "--site", "9")[0] == 1
        code, out, _ = run(capsys, "report", "--site", "1", "--format", "json")
        assert (code, orjson.loads(out)) == (0, data)
        assert run(capsys, "report", "--site", "9")[0] == 1


class TestSiteReportHeadline:
    def test_setting_read_and_said(self, env: str, capsys: pytest.CaptureFixture[str],  # noqa: F811
                                   monkeypatch: pytest.MonkeyPatch) -> None:
        """PIXELTRACK_HEADLINE reaches `report --site`: the JSON's headline and the table's fourth line."""
        run(capsys, "site", "create", "--domain", "a.example", "--mode", "unique")
        data = orjson.loads(run(capsys, "report", "--site", "1", "--format", "json")[1])
        assert (data["headline"], data["human"], data["unknown"], data["machine"], data["total"]) == (
            {"setting": "all", "counts": "human + unknown"}, 0, 0, 0, 0)
        monkeypatch.setenv("PIXELTRACK_HEADLINE", "recognised")
        code, out, _ = run(capsys, "report", "--site", "1")
        assert (code, out.splitlines()[3].split(". ")[0]) == (0, "Headline figures count human (PIXELTRACK_HEADLINE=recognised)")


class TestMintIdentity:
    @pytest.mark.parametrize(("mode", "identified"), [
        ("personal", [True, True]), ("permission_personal", [True, False]), ("unique", [False, False]),
        ("anonymous", [False, False]),
    ])
    def test_identify_flag_per_mode_and_consent(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
                                                mode: str, identified: list[bool]) -> None:
        """Clicks carry identity only for personal jobs and consenting permission_personal recipients."""
        run(capsys, "job", "create", "--name", "j", "--mode", mode)
        f = tmp_path / "r.csv"
        f.write_text("recipient,consent\na@x.org,yes\nb@x.org,no\n")
        run(capsys, "recipients", "import", "--job", "1", str(f))
        out = run(capsys, "mint", "--job", "1", "--all", "--url", "https://shop.example/")[1]
        table = list(csv.reader(io.StringIO(out)))[1:]
        signer = Signer(TEST_SECRET)
        assert [signer.identifies(row[2].split("/")[4]) for row in table] == identified
        assert [signer.verify(row[2].split("/")[4]) for row in table] == [
            Token(KIND_CLICK, 1, 0, "https://shop.example/"), Token(KIND_CLICK, 1, 1, "https://shop.example/")]
        single = run(capsys, "mint", "--job", "1", "--recipient", "b@x.org", "--url", "https://shop.example/")[1]
        assert signer.identifies(single.splitlines()[1].split("/")[-1]) is identified[1]
