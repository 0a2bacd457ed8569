"""Hostile input: whatever a job or configuration file holds, bulkconn answers with its own error, file and line.

Property-based (hypothesis) for the parsers; real `bulkconn validate` subprocesses for hostile files, including
a 100 MB single line whose memory use is measured.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkconn.config import _KEYS, parse_config
from bulkconn.errors import ConfigError, JobError
from bulkconn.jobfile import MAX_LINE_BYTES
from bulkconn.jobline import LINE_FIELDS, Invalid
from bulkconn.jobscan import scan_job
from bulkconn.lanereader import LaneReader

# Property-based tests run 150 examples each: on a loaded 2-core machine that can pass the 10 s unit budget.
pytestmark = pytest.mark.timeout(60)
FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TENANTS = ["contoso", "fabrikam"]
GUID = "e11c1de8-1de8-e11c-e81d-1ce1e81d1ce1"

# Strings that have broken parsers before: path tricks, NUL, a home of a user that does not exist, odd unicode.
NASTY = st.sampled_from(
    ["", " ", "..", "../../etc/passwd", "a\x00b", "~nouser-s12/x", "\ud7ff", "é", "%2e%2e", "?#", "\u202e", "x" * 300]
)
TEXT = st.one_of(st.text(max_size=30), NASTY)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),  # beyond 64 bits too
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(sorted(LINE_FIELDS | {"defaults"})), TEXT), children, max_size=5),
    ),
    max_leaves=20,
)
# A job line: mostly objects with the job's own fields (so the deep checks run), sometimes anything at all.
JOB_OBJECT = st.fixed_dictionaries(
    {},
    optional={
        "tenant": st.one_of(st.sampled_from(TENANTS), JSON),
        "id": st.one_of(st.just(GUID), JSON),
        "patch": st.one_of(st.dictionaries(st.sampled_from(["serverName", "status", "id", "@odata.type"]), JSON), JSON),
        "action": st.one_of(st.sampled_from(["update", "sync"]), JSON),
        "syncType": st.one_of(st.sampled_from(["fullSync", "deltaSync"]), JSON),
        "resource": JSON,
        "key": JSON,
        "defaults": JSON,
    },
)
LINE = st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()),  # stdlib writes NaN, Infinity and huge integers: all hostile to orjson
    JOB_OBJECT.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=80),  # non-UTF-8, NUL, lone CR
    st.text(max_size=40).map(lambda t: t.encode("utf-16-le")),
)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@FUZZ
@given(lines=st.lists(LINE, max_size=6))
def test_any_job_bytes_give_invalid_lines_or_a_job_error(tmp_path: Path, lines: list[bytes]) -> None:
    """Any job file scans without a stray exception; every problem names its line; valid lines read back."""
    job = _write(tmp_path, "job.jsonl", b"\n".join(lines))
    problems: list[Invalid] = []
    try:
        scan = scan_job(job, TENANTS, on_invalid=problems.append)
    except JobError as exc:
        assert exc.file == str(job) and exc.line >= 1  # the defaults line: a whole-job error, with where
        return
    for problem in problems:
        assert problem.message.startswith(f"line {problem.line}: ")
    for tenant in scan.offsets:
        reader = LaneReader(scan, tenant)
        try:
            assert len(reader.read(100)) == len(scan.offsets[tenant])
        finally:
            reader.close()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a TOML basic string is a JSON string for what json.dumps writes


TOML_SCALAR = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), TEXT)
TOML_VALUE = st.recursive(
    TOML_SCALAR,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)),
    max_leaves=8,
)
KEY_VALUE = st.one_of(NASTY, TEXT, TOML_VALUE, st.just("S12_FUZZ_UNSET"))
# Mostly known keys on a tenant that has its ids, so the checks behind "is required" and "unknown key" run too.
# A tenant with its ids and up to three other known keys: the checks behind "is required" and "unknown key" run.
NEAR_VALID_TENANT = st.dictionaries(
    st.sampled_from(sorted(_KEYS - {"tenant_id", "client_id"})), KEY_VALUE, min_size=1, max_size=3
).map(lambda table: {"tenant_id": "t", "client_id": "c", **table})
TENANT_TABLE = st.one_of(
    NEAR_VALID_TENANT,
    st.dictionaries(st.one_of(st.sampled_from(sorted(_KEYS | {"secret"})), TEXT), TOML_VALUE, max_size=4),
)
CONFIG = st.fixed_dictionaries(
    {},
    optional={
        "defaults": TENANT_TABLE,
        "tenants": st.dictionaries(st.one_of(st.sampled_from(TENANTS), TEXT), st.one_of(TENANT_TABLE, TOML_VALUE)),
        "other": TOML_VALUE,
    },
)


def _toml(document: dict[str, Any]) -> str:
    return "\n".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in document.items())


@FUZZ
@given(document=CONFIG)
def test_any_configuration_gives_a_config_or_a_config_error(tmp_path: Path, document: dict[str, Any]) -> None:
    """Random TOML configurations parse or raise ConfigError naming the file, never anything else."""
    try:
        parse_config(_toml(document), file="fuzz.toml", base=tmp_path)
    except ConfigError as exc:
        assert exc.file == "fuzz.toml"


@FUZZ
@given(table=NEAR_VALID_TENANT)
def test_any_tenant_table_gives_a_tenant_or_a_config_error(tmp_path: Path, table: dict[str, Any]) -> None:
    """One tenant with random values for known keys (paths, names, numbers): a tenant, or ConfigError with file."""
    try:
        parse_config(_toml({"tenants": {"contoso": table}}), file="fuzz.toml", base=tmp_path)
    except ConfigError as exc:
        assert exc.file == "fuzz.toml"


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_any_configuration_text_gives_a_config_or_a_config_error(tmp_path: Path, text: str) -> None:
    """Arbitrary text as a configuration file: ConfigError naming the file, never anything else."""
    try:
        parse_config(text, file="fuzz.toml", base=tmp_path)
    except ConfigError as exc:
        assert exc.file == "fuzz.toml"


def test_deeply_nested_toml_is_a_config_error(tmp_path: Path) -> None:
    """100,000 nested arrays in a configuration file: a ConfigError, not a RecursionError."""
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_config("a = " + "[" * 100_000 + "]" * 100_000, file="deep.toml", base=tmp_path)


def test_a_home_of_an_unknown_user_is_a_config_error(tmp_path: Path) -> None:
    """`~nosuchuser/secret` as a file name is a ConfigError naming the key, not a RuntimeError."""
    text = '[tenants.a]\ntenant_id = "t"\nclient_id = "c"\nclient_secret_file = "~nosuchuser-s12/secret"\n'
    with pytest.raises(ConfigError, match="key 'client_secret_file': names a home directory that does not exist"):
        parse_config(text, file="c.toml", base=tmp_path)


# ---------------------------------------------------------------- `bulkconn validate` on hostile files


CONFIG_TEXT = """[tenants.contoso]
tenant_id = "00000000-0000-0000-0000-000000000001"
client_id = "00000000-0000-0000-0000-0000000000aa"
client_secret_env = "S12_FUZZ_SECRET"
"""
SMALL_JOB = b'{"tenant": "contoso", "id": "%s", "patch": {"serverName": "mail.contoso.com"}}\n' % GUID.encode()


def _validate(tmp_path: Path, job: Path, config: str = CONFIG_TEXT) -> tuple[int, str, str, int]:
    """Run `bulkconn validate` and return (exit code, stdout, stderr, peak RSS in KiB) of that one process."""
    (tmp_path / "c.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "BULKCONN_"))}
    env["S12_FUZZ_SECRET"] = "not-used-offline"
    out, errs = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, errs.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkconn", "validate", str(job), "--config", str(tmp_path / "c.toml")],
            stdout=stdout,
            stderr=stderr,
            cwd=tmp_path,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out.read_text(errors="replace"), errs.read_text(errors="replace"), usage.ru_maxrss


HOSTILE_JOBS = {
    "binary-garbage": bytes(range(256)) * 64 + b"\n\x00\xff\xfe\n",
    "nested-100k": b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "nested-objects-100k": b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n",
    "latin-1": '{"tenant": "contoso", "id": "x1", "patch": {"serverName": "café"}}\n'.encode("latin-1"),
    "utf-16-no-bom": SMALL_JOB.decode().encode("utf-16-le"),
    "huge-number": b'{"tenant": "contoso", "id": "x1", "patch": {"serverName": 1' + b"0" * 5000 + b"}}\n",
}


# A file in the wrong encoding is refused once, as a whole, with how to convert it (never one error per line).
WRONG_ENCODING = {"binary-garbage": "NUL bytes", "latin-1": "Windows-1252", "utf-16-no-bom": "UTF-16"}


@pytest.mark.parametrize("kind", sorted(WRONG_ENCODING))
def test_validate_refuses_a_wrongly_encoded_job_once(tmp_path: Path, kind: str) -> None:
    """`bulkconn validate` on a job that is not UTF-8: exit 2, one message naming file, encoding and conversion."""
    job = _write(tmp_path, f"{kind}.jsonl", HOSTILE_JOBS[kind])
    code, stdout, stderr, _ = _validate(tmp_path, job)
    assert code == 2, stdout + stderr
    assert "Traceback" not in stderr and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and str(job) in stderr
    assert WRONG_ENCODING[kind] in stderr and "convert it to UTF-8" in stderr


@pytest.mark.parametrize("kind", sorted(set(HOSTILE_JOBS) - set(WRONG_ENCODING)))
def test_validate_names_file_and_line_for_hostile_jobs(tmp_path: Path, kind: str) -> None:
    """`bulkconn validate` on a hostile job: exit 1, every problem on stderr as FILE:LINE: message, no traceback."""
    job = _write(tmp_path, f"{kind}.jsonl", HOSTILE_JOBS[kind])
    code, stdout, stderr, _ = _validate(tmp_path, job)
    assert code == 1, stdout + stderr
    assert "Traceback" not in stderr
    problems = [line for line in stderr.splitlines() if not line.startswith("...")]
    assert problems and all(re.match(rf"{re.escape(str(job))}:\d+: \S", line) for line in problems), stderr
    assert "0 valid operation(s)" in stdout


def test_a_100_mb_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A 100 MB single line: a clear "too long" message, and the process never holds the line in memory."""
    small = _write(tmp_path, "small.jsonl", SMALL_JOB)
    code, _, _, baseline_kib = _validate(tmp_path, small)
    assert code == 0
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as handle:
        handle.write(b'{"tenant": "contoso", "id": "x1", "patch": {"serverName": "')
        for _ in range(100):
            handle.write(b"x" * 1_000_000)
        handle.write(b'"}}\n')
        handle.write(SMALL_JOB)
    code, stdout, stderr, peak_kib = _validate(tmp_path, huge)
    assert code == 1, stdout + stderr
    assert f"{huge}:1: too long (100000063 bytes; a line holds one operation, at most {MAX_LINE_BYTES}" in stderr
    assert "1 valid operation(s), 1 invalid line(s) in 2 line(s)" in stdout  # the line after it is still read
    # The line is 100 MB; the scan holds at most MAX_LINE_BYTES (1 MiB) of it at a time.
    assert peak_kib - baseline_kib < 16 * 1024, (baseline_kib, peak_kib)


@pytest.mark.parametrize(
    "config",
    [
        "a = " + "[" * 100_000 + "]" * 100_000,
        "\x00\x01\x02 garbage = = =",
        CONFIG_TEXT.replace('client_secret_env = "S12_FUZZ_SECRET"', 'client_secret_file = "~nosuchuser-s12/s"'),
    ],
    ids=["nested-100k", "garbage", "unknown-home"],
)
def test_validate_refuses_hostile_configuration_without_traceback(tmp_path: Path, config: str) -> None:
    """A hostile configuration file: exit 2, one line naming the file, no traceback."""
    job = _write(tmp_path, "job.jsonl", SMALL_JOB)
    code, stdout, stderr, _ = _validate(tmp_path, job, config)
    assert code == 2, stdout + stderr
    assert "Traceback" not in stderr
    assert stderr.startswith(f"bulkconn: error: {tmp_path / 'c.toml'}")
    assert stderr.count("\n") == 1
