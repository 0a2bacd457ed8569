"""Write docs/images/report-show.png: a demo-like run on the emulator, its HTML handover report, in Chromium.

Run from the repository root: ``python tools/report_screenshot.py [OUT.png]``. Needs Debian's ``chromium``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bulkconn.report.handover import load_handover  # noqa: E402
from bulkconn.report.show import render  # noqa: E402
from tests.browser import chromium, demo_like_report, screenshot  # noqa: E402


def main(out: Path) -> int:
    binary = chromium()
    if binary is None:
        print("chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        report = demo_like_report(Path(tmp) / "run")
        page = Path(tmp) / "report.html"
        # Show the report as a user's folder would name it, not the temporary one.
        handover = load_handover(report)
        handover.report, handover.job = Path("migrate.report.jsonl"), Path("migrate.jsonl")
        page.write_text(render(handover, "html"), encoding="utf-8")
        screenshot(binary, page, Path(tmp) / "shot.png", width=1280, height=1400)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes((Path(tmp) / "shot.png").read_bytes())
    print(f"{out}: written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images" / "report-show.png"))
