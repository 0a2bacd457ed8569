"""What people and scripts read from the CLI: problem lines, next commands, --json, environment, pipes."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import World, launch, read_report

pytestmark = pytest.mark.e2e  # real emulator, sockets or subprocesses

MISSING = "00000000-0000-0000-0000-00000000dead"  # no such connector: Graph answers 404
SLIPS: list[dict[str, Any]] = [  # the slips "did you mean" is for, one per line
    {"tenant": "contoso", "id": "c1", "patch": {"servername": "x.example.com"}},
    {"tenant": "contosso", "id": "c1", "patch": {"serverName": "x.example.com"}},
    {"tenant": "contoso", "id": "c1", "patch": {"exchangeConnectorType": "Hosted"}},
    {"tenant": "contoso", "id": "c1", "action": "sync", "syncType": "delta"},
]


def _job(world: World, extra: list[dict[str, Any]], name: str) -> Path:
    path = world.dir / name
    path.write_bytes(world.job.read_bytes() + b"".join(orjson.dumps(x) + b"\n" for x in extra))
    return path


def _problems(stderr: str, job: Path) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{job}:")]


def _next_commands(stderr: str) -> list[list[str]]:
    """The commands listed under "next:", as argument lists without the leading ``bulkconn``."""
    tail = stderr.split("\nnext:\n", 1)[1]
    return [shlex.split(line)[1:] for line in tail.splitlines() if line.startswith("  bulkconn ")]


def test_problems_read_the_same_from_validate_dry_run_and_run(world: World) -> None:
    """Each bad line is `FILE:LINE: message` on stderr, with its "did you mean", alike in validate, dry-run and run."""
    job = _job(world, SLIPS, "slips.jsonl")
    validate = world.bulkconn("validate", str(job), "--config", "bulkconn.toml")
    dry = world.bulkconn("run", str(job), "--config", "bulkconn.toml", "--dry-run")
    run = world.bulkconn("run", str(job), "--config", "bulkconn.toml", "-q")
    assert (validate.returncode, dry.returncode, run.returncode) == (1, 1, 1), run.stderr
    expected = _problems(validate.stderr, job)
    assert [line.split(": ", 1)[0] for line in expected] == [f"{job}:{n}" for n in range(41, 45)]
    for wanted in ("'serverName'", "'contoso'", "'hosted'", "'deltaSync'"):
        assert any(f"(did you mean {wanted}?)" in line for line in expected), expected
    assert _problems(dry.stderr, job) == expected
    assert _problems(run.stderr, job) == expected
    assert "line 41" not in validate.stderr + dry.stderr + run.stderr  # the line is said once, in front


def test_after_the_first_20_problems_comes_and_n_more(world: World) -> None:
    """25 bad lines: 20 problem lines, then "... and 5 more", from validate and from a --strict run alike."""
    job = _job(world, [{"tenant": "contoso", "id": f"c{n}", "patch": {"nope": 1}} for n in range(25)], "bad.jsonl")
    validate = world.bulkconn("validate", str(job), "--config", "bulkconn.toml")
    strict = world.bulkconn("run", str(job), "--config", "bulkconn.toml", "--strict")
    assert (validate.returncode, strict.returncode) == (1, 2)
    for proc in (validate, strict):
        assert len(_problems(proc.stderr, job)) == 20
        assert "... and 5 more" in proc.stderr
    assert world.emu.stats()["writes_total"] == 0


def test_a_run_with_failures_ends_with_its_problems_and_exact_next_commands(world: World) -> None:
    """Failures are listed as FILE:LINE; the next commands, run as printed, retry them; the resume adds up."""
    job = _job(world, [{"tenant": "contoso", "id": MISSING, "patch": {"serverName": "x"}}] * 3, "j.jsonl")
    first = world.bulkconn("run", "j.jsonl", "--config", "bulkconn.toml", "-q")
    assert first.returncode == 1, first.stderr
    failures = [line.split(" with id")[0] for line in _problems(first.stderr, Path(job.name))]
    problem = f"contoso {MISSING} update: failed (HTTP 404): ResourceNotFound: DeviceManagementExchangeConnector"
    assert failures == [f"j.jsonl:{n}: {problem}" for n in (41, 42, 43)]
    commands = _next_commands(first.stderr)
    assert commands[0] == ["report", "failed", "j.report.jsonl", "-o", "j.retry.jsonl"]
    assert commands[1] == ["run", "j.retry.jsonl", "--config", "bulkconn.toml"]
    retry = ["run", "j.jsonl", "--report", "j.report.jsonl", "--resume", "--retry-failed", "--config", "bulkconn.toml"]
    assert commands[2] == retry
    wrote = world.bulkconn(*commands[0])
    assert wrote.returncode == 0 and len((world.dir / "j.retry.jsonl").read_bytes().splitlines()) == 3
    resumed = world.bulkconn(*commands[2], "-q", "--json")
    assert resumed.returncode == 1, resumed.stderr
    assert "40 operation(s) already final are skipped (40 succeeded); 3 to go, 3 of them recorded before" in (
        resumed.stderr
    )
    document = orjson.loads(resumed.stdout)
    assert document["already_final"] == 40 and document["counts"] == {"failed": 3}
    total = next(line for line in resumed.stderr.splitlines() if "total" in line)
    assert "already final" in resumed.stderr  # skipped, already final: a resume's column of its own
    assert [cell.strip() for cell in total.strip("│ ").split("│")] == ["total", "0", "3", "0", "0", "0", "40"]


def test_report_failed_with_nothing_failed_writes_nothing(world: World) -> None:
    """A clean report: `report failed` says there is nothing to retry, writes no file, exits 0."""
    assert world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q").returncode == 0
    proc = world.bulkconn("report", "failed", "job.report.jsonl", "-o", "retry.jsonl")
    assert proc.returncode == 0
    assert "nothing failed" in proc.stdout and not (world.dir / "retry.jsonl").exists()
    as_json = world.bulkconn("report", "failed", "job.report.jsonl", "-o", "retry.jsonl", "--json")
    assert orjson.loads(as_json.stdout) == {"job": None, "operations": 0}


def test_json_output_is_one_document_on_stdout(world: World) -> None:
    """run, run --dry-run, validate and auth check with --json: stdout is exactly one JSON document."""
    run = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "--json")
    assert run.returncode == 0, run.stderr
    document = orjson.loads(run.stdout)
    assert document["counts"] == {"succeeded": 40} and document["report"] == "job.report.jsonl"
    assert document["next"] == [] and document["problems"] == [] and "bulkconn summary" in run.stderr
    dry = orjson.loads(world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "--dry-run", "--json").stdout)
    assert dry["valid"] == 40 and {t["alias"] for t in dry["tenants"]} == {"contoso", "fabrikam"}
    bad = _job(world, SLIPS[:1], "one-bad.jsonl")
    validate = world.bulkconn("validate", str(bad), "--config", "bulkconn.toml", "--json")
    checked = orjson.loads(validate.stdout)
    assert (validate.returncode, checked["valid"], checked["invalid"], checked["more"]) == (1, 40, 1, 0)
    assert checked["problems"][0]["line"] == 41 and "did you mean 'serverName'" in checked["problems"][0]["message"]
    auth = world.bulkconn("auth", "check", "--config", "bulkconn.toml", "--json")
    assert auth.returncode == 0
    assert [t["result"] for t in orjson.loads(auth.stdout)["tenants"]] == ["ok", "ok"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["validate", "missing.jsonl", "--config", "bulkconn.toml"], "missing.jsonl"),
        (["run", "job.jsonl", "--config", "nowhere.toml"], "nowhere.toml"),
        (["report", "summary", "bulkconn.toml"], "not a bulkconn report"),
    ],
)
def test_a_mistake_under_json_still_gives_one_document(world: World, args: list[str], said: str) -> None:
    """A script reading --json gets a document on a mistake too: the message and the exit code, also on stderr."""
    done = world.bulkconn(*args, "--json")
    document = orjson.loads(done.stdout)
    assert done.returncode == 2 and document["exit_code"] == 2
    assert said in document["error"] and document["error"] in done.stderr and "Traceback" not in done.stderr


def test_every_option_reads_a_bulkconn_variable(world: World) -> None:
    """BULKCONN_CONFIG and BULKCONN_<COMMAND>_<OPTION> stand in for the options; a bad value is named."""
    env = {"BULKCONN_CONFIG": "bulkconn.toml", "BULKCONN_RUN_JSON": "1", "BULKCONN_RUN_QUIET": "1"}
    proc = world.bulkconn("run", "job.jsonl", env=env)
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["counts"] == {"succeeded": 40}
    wrong = world.bulkconn("run", "job.jsonl", env={**env, "BULKCONN_RUN_BATCH_SIZE": "21"})
    assert wrong.returncode == 2 and "--batch-size" in wrong.stderr and "21 is not in the range" in wrong.stderr


def test_debug_after_the_subcommand_version_and_completion(world: World) -> None:
    """`run ... --debug` logs requests; -V prints the version; _BULKCONN_COMPLETE completes command names."""
    debug = world.bulkconn("run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--debug", subprocess=True)
    assert debug.returncode == 0 and " DEBUG bulkconn." in debug.stderr
    for flag in ("-V", "--version"):
        assert re.fullmatch(r"bulkconn, version \S+\n", world.bulkconn(flag).stdout)
    env = {"_BULKCONN_COMPLETE": "bash_complete", "COMP_WORDS": "bulkconn re", "COMP_CWORD": "1"}
    completion = world.bulkconn(env=env, subprocess=True)
    assert completion.returncode == 0 and "plain,report" in completion.stdout.splitlines()


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "job.jsonl", "--config", "bulkconn.toml"],
        ["run", "job.jsonl", "--config", "bulkconn.toml", "--dry-run"],
        ["run", "job.jsonl", "--config", "bulkconn.toml", "-q", "--json"],
        ["--help"],
    ],
    ids=["validate", "dry-run", "run-json", "help"],
)
def test_a_reader_that_goes_away_gets_no_broken_pipe_message(world: World, args: list[str]) -> None:
    """`bulkconn ... | head`: the pipe's reader closes first; no "Broken pipe", no traceback, and the run still ran."""
    proc = subprocess.Popen(
        launch("", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=world.dir, env=world.env()
    )
    assert proc.stdout is not None
    proc.stdout.close()  # before the interpreter has even started: every write to stdout meets a closed pipe
    _, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert "Broken pipe" not in stderr and "BrokenPipeError" not in stderr and "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr
    assert proc.returncode in (141, 1)  # 1: click's own --help handling of a closed pipe
    if "--json" in args:
        assert proc.returncode == 141
        _, results, _ = read_report(world.dir / "job.report.jsonl")
        assert len(results) == 40


def test_validate_and_dry_run_need_no_secret(world: World) -> None:
    """With the secret's variable unset and a secret file missing, validate and --dry-run work; run says what is missing."""
    text = world.config.read_text()
    unset = re.sub(r'client_secret_file = "[^"]*"', 'client_secret_env = "P13A_UNSET_SECRET"', text, count=1)
    (world.dir / "unset.toml").write_text(re.sub(r'client_secret_file = "[^"]*"', 'client_secret_file = "gone"', unset))
    for args in (["validate", "job.jsonl"], ["run", "job.jsonl", "--dry-run"]):
        proc = world.bulkconn(*args, "--config", "unset.toml")
        assert proc.returncode == 0, proc.stderr
    run = world.bulkconn("run", "job.jsonl", "--config", "unset.toml", "-q")
    assert run.returncode == 2 and "P13A_UNSET_SECRET is not set" in run.stderr
    assert world.emu.stats()["requests_total"] == 0
