"""The HTML handover report in a real browser (headless Chromium, Debian's `chromium` package), when installed."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from bulkconn.report.handover import load_handover
from bulkconn.report.show import render
from tests.browser import chromium, demo_like_report, dump_dom, near, page_area_ok, png_colours, screenshot
from tests.test_report_show import IMAGE, SCRIPT, sample_report

BINARY = chromium()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        BINARY is None,
        reason="headless Chromium is not installed (Debian: apt-get install chromium): the HTML report is not "
        "checked in a browser",
    ),
]
NAVY, RED, GREEN = (19, 41, 75), (180, 35, 24), (30, 123, 70)  # header band, failures, successes (show_html.CSS)


class _Dom(HTMLParser):
    """Tags, title and visible text of the document Chromium dumped."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.title = ""
        self._inside = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._inside = tag

    def handle_endtag(self, tag: str) -> None:
        self._inside = ""

    def handle_data(self, data: str) -> None:
        if self._inside == "title":
            self.title += data
        elif self._inside != "style":
            self.text.append(data)


def _render(report: Path, page: Path) -> _Dom:
    page.write_text(render(load_handover(report), "html"), encoding="utf-8")
    assert BINARY is not None
    dom = _Dom()
    dom.feed(dump_dom(BINARY, page, page.parent / "profile"))
    return dom


def test_chromium_shows_a_demo_runs_tenants_changes_and_failures(tmp_path: Path) -> None:
    """After a demo-like run the browser shows each tenant, what changed, each failure's reason, in colour."""
    page = tmp_path / "report.html"
    dom = _render(demo_like_report(tmp_path / "run"), page)
    text = " ".join(" ".join(dom.text).split())
    assert dom.title == "Change report: migrate.jsonl"
    for shown in ("contoso", "fabrikam", "northwind", "What changed", "serviceToService", "sync deltaSync"):
        assert shown in text, shown
    assert "Not found in this tenant: DeviceManagementExchangeConnector with id" in text
    assert "Not sent, the job line is invalid" in text and "'Hosted'" in text
    assert "27 operations: 25 succeeded, 1 failed, 1 invalid" in text
    assert BINARY is not None
    png = tmp_path / "shot.png"
    screenshot(BINARY, page, png, width=1024, height=1400)
    width, height, colours = png_colours(png)
    assert (width, height) == (1024, 1400) and page_area_ok(colours)
    assert near(colours, NAVY) > width * 40, "the header band is not drawn"
    assert near(colours, RED) > 0 and near(colours, GREEN) > 0, "failures and successes are not coloured"


def test_markup_in_values_is_shown_and_never_runs_in_chromium(tmp_path: Path) -> None:
    """A <script> and an <img onerror> in an object's value and Graph's message: text on the page, nothing ran."""
    dom = _render(sample_report(tmp_path), tmp_path / "report.html")
    assert dom.title == "Change report: job.jsonl"  # a script that ran would have set it to 'pwned'
    assert "script" not in dom.tags and "img" not in dom.tags
    text = "".join(dom.text)
    assert SCRIPT in text and IMAGE in text
