"""The README's command sequence, run in a clone, leaves no untracked file: every file it writes is ignored by git."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from bulkconn.cli.common import default_report

ROOT = Path(__file__).parent.parent


def _using_it_commands() -> list[list[str]]:
    """The commands of the README's "Using it" block (and a `# then: bulkconn ...` in a comment), as arguments."""
    block = (ROOT / "README.md").read_text().split("## Using it", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        code, _, comment = line.partition("#")
        commands.append(shlex.split(code))
        if "then: bulkconn " in comment:
            commands.append(shlex.split(comment.split("then: ", 1)[1]))
    return [c for c in commands if c]


def _written(args: list[str]) -> list[str]:
    """The files a command writes: its -o/--out, and for `run` its report (the job's default one)."""
    files = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("-o", "--out", "--output", "--report")]
    if args[1] == "run" and "--dry-run" not in args and "--report" not in args:
        files.append(str(default_report(Path(args[2]))))
    return files


def test_every_file_the_readme_sequence_writes_is_ignored_by_git() -> None:
    """report failed, report show, rollback, export and every run's report: under jobs/, each matched by .gitignore."""
    assert shutil.which("git"), "git decides what .gitignore ignores: install it (a clone of this repository has it)"
    written = [path for args in _using_it_commands() for path in _written(args)]
    assert len(written) >= 7, written  # the reports of three runs, a retry job, a page, an undo job, an export
    for path in written:
        assert path.startswith("jobs/"), path  # nothing at the root of a clone
        ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{path} is not ignored by .gitignore"
