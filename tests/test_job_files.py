"""Job files as Windows tools write them (UTF-16, BOM, CRLF, code pages) and CSV jobs from spreadsheets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkconn.config import load_config
from bulkconn.emulator import Emulator, EmulatorOptions
from bulkconn.emulator.artifacts import write_config
from bulkconn.engine import EngineSettings
from bulkconn.errors import JobError
from bulkconn.fingerprint import fingerprint
from bulkconn.jobline import Invalid
from bulkconn.jobscan import JobScan, job_objects, scan_job
from bulkconn.lanereader import LaneReader
from bulkconn.model import Operation
from bulkconn.runner import RunOptions, execute
from bulkconn.suggest import closest
from tests.conftest import FAST_RETRY, read_report

TENANTS = ["contoso", "fabrikam"]
ID1, ID2, ID3 = "d5f4b3b2-e4b0-4ce6-8741-c7a87ce42c82", "e6c3f339-1a2b-4f1f-b1fd-42a29755d4c1", "701966a0-c381"

JSONL = (
    f'{{"tenant": "contoso", "id": "{ID1}", "patch": {{"serverName": "mail2.contoso.com"}}}}\n'
    f'{{"tenant": "fabrikam", "id": "{ID2}", "patch": {{"serverName": "ex\\nchange", "version": null}}}}\n'
    f'{{"tenant": "contoso", "id": "{ID3}", "action": "sync", "syncType": "deltaSync", "key": "sync-1"}}\n'
)
# The same job as a spreadsheet: line 3's cell spans two lines, so the sync row is line 5, as in the report.
CSV = (
    "tenant,id,action,syncType,serverName,version,key\n"
    f"contoso,{ID1},,,mail2.contoso.com,,\n"
    f'fabrikam,{ID2},,,"ex\nchange",#null,\n'
    f"contoso,{ID3},sync,deltaSync,,,sync-1\n"
)


def _scan(path: Path, tenants: list[str] = TENANTS) -> tuple[JobScan, list[Invalid]]:
    invalid: list[Invalid] = []
    return scan_job(path, tenants, on_invalid=invalid.append), invalid


def _operations(scan: JobScan) -> list[Operation]:
    ops: list[Operation] = []
    for tenant in scan.offsets:
        reader = LaneReader(scan, tenant)
        ops += reader.read(100)
        reader.close()
    return sorted(ops, key=lambda op: op.line)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_same_job_as_jsonl_and_csv_yields_identical_operations(tmp_path: Path) -> None:
    """A CSV row becomes exactly the operation its JSON line would (keys and properties; lines count the header)."""
    jsonl_scan, jsonl_invalid = _scan(_write(tmp_path / "job.jsonl", JSONL.encode()))
    csv_scan, csv_invalid = _scan(_write(tmp_path / "job.csv", CSV.encode()))
    assert jsonl_invalid == csv_invalid == []
    from_jsonl, from_csv = _operations(jsonl_scan), _operations(csv_scan)
    assert [op.line for op in from_csv] == [2, 3, 5]
    assert [op.key for op in from_csv] == ["2", "3", "sync-1"]
    assert [(op.tenant, op.object_id, op.action, op.patch, op.sync_type) for op in from_csv] == [
        (op.tenant, op.object_id, op.action, op.patch, op.sync_type) for op in from_jsonl
    ]
    assert from_csv[1].patch == {"serverName": "ex\nchange", "version": None}
    assert csv_scan.lines == fingerprint(tmp_path / "job.csv").lines == 5


def test_excel_semicolon_export_with_bom_and_crlf(tmp_path: Path) -> None:
    """Excel's 'CSV UTF-8' in a ';' locale: BOM, CRLF, trailing empty rows; '##null' is the text '#null'."""
    text = f"tenant;id;exchangeConnectorType;serverName\r\ncontoso;{ID1};hosted;##null\r\n;;;\r\n"
    scan, invalid = _scan(_write(tmp_path / "excel.csv", b"\xef\xbb\xbf" + text.encode()))
    assert invalid == []
    (op,) = _operations(scan)
    assert op.patch == {"exchangeConnectorType": "hosted", "serverName": "#null"}
    assert (op.line, op.key) == (2, "2")


def test_csv_rows_are_validated_like_json_lines(tmp_path: Path) -> None:
    """Bad enum values, missing cells and short rows are invalid lines naming the CSV line and a suggestion."""
    text = f"tenant,id,exchangeConnectorType\ncontosso,{ID1},hosted\ncontoso,{ID2},Hosted\ncontoso,{ID3}\ncontoso,,\n"
    _, invalid = _scan(_write(tmp_path / "bad.csv", text.encode()))
    messages = {i.line: i.message for i in invalid}
    assert "did you mean 'contoso'?" in messages[2]
    assert "did you mean 'hosted'?" in messages[3]
    assert "2 cells but the header has 3 columns" in messages[4]
    assert messages[5] == "line 5: missing 'id'"


def test_unclosed_quote_stops_the_job_once_at_the_row_it_starts(tmp_path: Path) -> None:
    """A quote left open would swallow every later row: one error naming the line where that row starts."""
    path = _write(tmp_path / "open.csv", f'tenant,id,serverName\ncontoso,{ID1},"x\ncontoso,{ID2},y\n'.encode())
    with pytest.raises(JobError, match=r"open.csv:2: malformed CSV"):
        _scan(path)


def test_unknown_csv_column_is_one_error_with_a_suggestion(tmp_path: Path) -> None:
    """A misspelt header stops the job once (not once per row) and says which column was meant."""
    path = _write(tmp_path / "typo.csv", f"tenant,id,servername\ncontoso,{ID1},x\ncontoso,{ID2},y\n".encode())
    with pytest.raises(JobError, match=r"typo.csv:1: unknown column 'servername' \(did you mean 'serverName'\?\)"):
        _scan(path)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_powershell_utf16_job_is_read_and_reread(tmp_path: Path, codec: str) -> None:
    """UTF-16 with a BOM (PowerShell 5.1 '>') is read; 0x0A 0x00 bytes across two characters do not split a line."""
    bom = b"\xff\xfe" if codec == "utf-16-le" else b"\xfe\xff"
    text = JSONL.replace("mail2.contoso.com", "mail\u0a05\u0100\u0a05.contoso.com").replace("\n", "\r\n")
    path = _write(tmp_path / "ps.jsonl", bom + text.encode(codec))
    scan, invalid = _scan(path)
    assert invalid == []
    ops = _operations(scan)
    assert [op.line for op in ops] == [1, 2, 3]
    assert ops[0].patch == {"serverName": "mail\u0a05\u0100\u0a05.contoso.com"}
    assert fingerprint(path).lines == scan.lines == 3


def test_utf16_csv_is_read(tmp_path: Path) -> None:
    """A CSV saved as 'Unicode Text' style UTF-16 reads like its UTF-8 twin."""
    scan, invalid = _scan(_write(tmp_path / "job.csv", b"\xff\xfe" + CSV.encode("utf-16-le")))
    assert invalid == []
    assert [op.line for op in _operations(scan)] == [2, 3, 5]


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("ansi.jsonl", f'{{"tenant": "contoso", "id": "{ID1}", "patch": {{"serverName": "caf\u00e9"}}}}\n' * 3, 1),
        ("ansi.csv", "tenant;id;serverName\r\n" + f"contoso;{ID1};caf\u00e9\r\n" * 3, 2),  # Excel's plain 'CSV'
    ],
)
def test_code_page_bytes_are_one_error_naming_file_line_and_conversion(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    """Windows-1252 text is refused once, at the first bad line, with how to convert; no per-line errors."""
    path = _write(tmp_path / name, text.encode("cp1252"))
    with pytest.raises(JobError) as caught:
        _scan(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: byte ")
    assert "not valid UTF-8 (0xe9" in message
    stem, suffix = name.split(".")
    assert f"Get-Content {name} | Set-Content -Encoding utf8 {stem}-utf8.{suffix}" in message


@pytest.mark.parametrize(
    ("data", "found"),
    [(b"\xff\xfe\x00\x00{\x00\x00\x00", "UTF-32"), (b"{\x00}\x00\n\x00", "UTF-16 without a byte-order mark")],
)
def test_unreadable_encodings_are_refused_once(tmp_path: Path, data: bytes, found: str) -> None:
    """UTF-32 and BOM-less UTF-16 are named, with the conversion command."""
    with pytest.raises(JobError, match=found) as caught:
        _scan(_write(tmp_path / "odd.jsonl", data))
    assert "Set-Content -Encoding utf8" in str(caught.value)


@pytest.mark.parametrize(
    ("typed", "choices", "meant"),
    [
        ("servername", ["serverName", "connectorServerName", "version"], "serverName"),
        ("contosso", ["contoso", "fabrikam", "northwind"], "contoso"),
        ("Hosted", ["onPremises", "hosted", "serviceToService", "dedicated"], "hosted"),
        ("delta", ["fullSync", "deltaSync"], "deltaSync"),
        ("zzz", ["fullSync", "deltaSync"], None),
    ],
)
def test_closest_name(typed: str, choices: list[str], meant: str | None) -> None:
    """Case slips, prefixes and typos land on the intended name; nonsense gets no guess."""
    assert closest(typed, choices) == meant


def test_jsonl_messages_suggest_and_read_well(tmp_path: Path) -> None:
    """Unknown property, enum and syncType get a suggestion; type and missing-field messages read naturally."""
    lines = [
        f'{{"tenant": "contoso", "id": "{ID1}", "patch": {{"servername": "x"}}}}',
        f'{{"tenant": "contoso", "id": "{ID1}", "action": "sync", "syncType": "delta"}}',
        f'{{"tenant": "contoso", "id": "{ID1}", "patch": {{"serverName": 5}}}}',
        f'{{"tenant": "contoso", "id": "{ID1}", "action": "sync"}}',
        f'{{"tenant": null, "id": "{ID1}", "patch": {{"serverName": "x"}}}}',
        f'{{"tenant": "contoso", "id": "{ID1}", "resource": null, "patch": {{"serverName": "x"}}}}',
        f'{{"tenant": "contoso", "id": "{ID1}", "resource": "exchangeconnector", "patch": {{"serverName": "x"}}}}',
    ]
    _, invalid = _scan(_write(tmp_path / "j.jsonl", ("\n".join(lines) + "\n").encode()))
    messages = [i.message for i in invalid]
    assert not any("None" in m for m in messages)  # a JSON null is "null", never Python's None
    assert messages[4] == "line 5: 'tenant' must be a tenant alias (a string), not null"
    assert messages[5].startswith("line 6: unknown resource null (a /deviceManagement collection such as")
    assert "(did you mean 'exchangeConnector'?)" in messages[6]
    assert "(did you mean 'serverName'?)" in messages[0]
    assert messages[1].endswith("""not "delta" (did you mean 'deltaSync'?)""")
    assert messages[2] == "line 3: property 'serverName' must be a string, not a number"
    assert messages[3] == "line 4: a 'sync' line needs 'syncType': one of fullSync, deltaSync"


def test_example_csv_matches_its_jsonl_twin() -> None:
    """jobs/rename-servers.csv and jobs/rename-servers.jsonl describe the same changes."""
    jobs = Path(__file__).parent.parent / "jobs"
    csv_ops, jsonl_ops = (_operations(_scan(jobs / f"rename-servers.{ext}")[0]) for ext in ("csv", "jsonl"))
    assert len(csv_ops) == 20
    assert [(o.tenant, o.object_id, o.patch) for o in csv_ops] == [(o.tenant, o.object_id, o.patch) for o in jsonl_ops]


async def test_utf16_csv_job_runs_against_the_emulator(tmp_path: Path) -> None:
    """The example CSV, saved by PowerShell as UTF-16, runs end to end; report keys are the CSV line numbers."""
    job = tmp_path / "rename-servers.csv"
    text = (Path(__file__).parent.parent / "jobs" / "rename-servers.csv").read_text()
    job.write_bytes(b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le"))
    async with Emulator(EmulatorOptions(time_scale=0.05, state_dir=tmp_path / "state")) as emu:
        write_config(emu.core, emu.ca_file, tmp_path / "bulkconn.toml")
        options = RunOptions(report=tmp_path / "r.jsonl", settings=EngineSettings(seed=1, policy=FAST_RETRY))
        result = await execute(job, load_config(tmp_path / "bulkconn.toml"), options, install_signals=False)
        connectors = emu.state()["tenants"]["contoso"]["exchangeConnectors"]
    assert result.counts == {"succeeded": 20}
    assert {connectors[line.split(",")[1]]["serverName"] for line in text.splitlines()[1:]} == {"mail2.contoso.com"}
    header, results, _ = read_report(tmp_path / "r.jsonl")
    assert {r["key"] for r in results} == {str(n) for n in range(2, 22)}
    assert header["job_lines"] == fingerprint(job).lines == 21  # what a resume checks


def test_failed_lines_of_a_csv_job_are_written_as_json_lines(tmp_path: Path) -> None:
    """Rewriting a CSV job's lines (as `report failed` does) yields the JSON objects, named by CSV line."""
    job = _write(tmp_path / "job.csv", b"\xef\xbb\xbf" + CSV.replace("\n", "\r\n").encode())
    objects = dict(job_objects(job))
    assert sorted(objects) == [2, 3, 5]
    assert objects[3] == {"tenant": "fabrikam", "id": ID2, "patch": {"serverName": "ex\r\nchange", "version": None}}
