"""The container image and Kubernetes manifests: the fields the shard simulation and a real cluster rely on.

No cluster or Docker daemon runs here, so these tests read the files and check them against bulkconn's own
rules: the shard command line resolves to shard K of N from JOB_COMPLETION_INDEX, the report lands on the
shared volume under the default shard name, the ConfigMap is a valid configuration whose credentials are
files in the mounted Secret, and everything runs as a non-root user.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulkconn.config import parse_config
from bulkconn.emulator.tls import make_client_certificate
from bulkconn.shardenv import INDEX_ENV
from bulkconn.shards import ShardSpec, resolve_shard, shard_report_path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"


def load(name: str) -> dict[str, Any]:
    (document,) = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert isinstance(document, dict)
    return document


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def mounts(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container(job)["volumeMounts"]}


def volumes(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}


def shard_count(args: list[str]) -> int:
    return int(args[args.index("--shards") + 1])


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args, for the variables the container defines."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


def test_every_manifest_parses_and_kustomization_lists_existing_files() -> None:
    """All YAML loads; kustomize's resources are files that exist (and the merge Job is not among them)."""
    for path in DEPLOY.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["apiVersion"] and document["kind"], path
    resources = load("kustomization.yaml")["resources"]
    assert all((DEPLOY / name).is_file() for name in resources)
    assert "merge-job.yaml" not in resources  # it must wait until the shards are done


def test_shard_job_is_indexed_with_one_pod_per_shard_and_per_index_retries() -> None:
    """completionMode Indexed, completions = parallelism = --shards N, retries per index, one pod per index at a time."""
    job = load("job.yaml")
    spec = job["spec"]
    n = shard_count(container(job)["args"])
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == n
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["podReplacementPolicy"] == "Failed"  # never two pods appending to one shard report
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # required by backoffLimitPerIndex


def test_pod_failure_policy_follows_bulkconn_exit_codes() -> None:
    """Exit 2 fails the Job, 1 and 3 end the index, evictions are ignored; crashes (137) and 130 are retried."""
    job = load("job.yaml")
    rules = job["spec"]["podFailurePolicy"]["rules"]
    by_code = {code: r["action"] for r in rules if "onExitCodes" in r for code in r["onExitCodes"]["values"]}
    assert by_code == {2: "FailJob", 1: "FailIndex", 3: "FailIndex"}
    assert all(r["onExitCodes"]["containerName"] == container(job)["name"] for r in rules if "onExitCodes" in r)
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


@pytest.mark.parametrize("index", [0, 1, 3])
def test_shard_command_line_runs_shard_k_of_n_and_resumes_its_own_report(index: int) -> None:
    """The pod's args, with the index Kubernetes sets, name shard K of N and its default report on /reports."""
    job = load("job.yaml")
    args = container(job)["args"]
    n = shard_count(args)
    assert args[:2] == ["run", "/job/job.jsonl"] and "--resume" in args
    env = {INDEX_ENV: str(index)}
    assert resolve_shard(shard=None, shards=n, environ=env) == ShardSpec(index, n, INDEX_ENV)
    report = Path(expand(args[args.index("--report") + 1], env))
    assert report == shard_report_path(Path("/reports/job.jsonl"), ShardSpec(index, n))


def test_index_variable_comes_from_the_completion_index_annotation() -> None:
    """JOB_COMPLETION_INDEX is declared in the container (so $(...) in args expands) from the Job's annotation."""
    env = {e["name"]: e for e in container(load("job.yaml"))["env"]}
    field = env[INDEX_ENV]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert env["BULKCONN_CONFIG"]["value"] == "/config/bulkconn.toml"


def test_job_and_reports_live_on_the_shared_volume() -> None:
    """/job (read-only) and /reports (writable) come from one ReadWriteMany claim, as the merge Job sees it."""
    job, merge, pvc = load("job.yaml"), load("merge-job.yaml"), load("pvc.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = pvc["metadata"]["name"]
    shard_mounts = mounts(job)
    assert shard_mounts["/job"]["subPath"] == "job" and shard_mounts["/job"]["readOnly"] is True
    assert shard_mounts["/reports"]["subPath"] == "reports" and not shard_mounts["/reports"].get("readOnly")
    assert shard_mounts["/tmp"]["name"] == "tmp"  # the root file system is read-only
    for manifest in (job, merge):
        name = mounts(manifest)["/reports"]["name"]
        assert volumes(manifest)[name]["persistentVolumeClaim"]["claimName"] == claim
        assert mounts(manifest)["/reports"]["subPath"] == "reports"


def test_merge_job_merges_exactly_the_shard_reports_into_the_shared_volume() -> None:
    """The merge Job lists shard 0..N-1's default reports (N from the shard Job) and writes next to them."""
    n = shard_count(container(load("job.yaml"))["args"])
    args = container(load("merge-job.yaml"))["args"]
    assert args[:2] == ["report", "merge"]
    out = args.index("-o")
    assert args[2:out] == [str(shard_report_path(Path("/reports/job.jsonl"), ShardSpec(k, n))) for k in range(n)]
    assert args[out + 1] == "/reports/job.report.jsonl"


def test_configmap_is_a_valid_configuration_whose_credentials_are_mounted_secret_files(tmp_path: Path) -> None:
    """The ConfigMap's TOML loads with bulkconn's own parser; every *_file path lies in the Secret mount."""
    job = load("job.yaml")
    text = load("configmap.yaml")["data"]["bulkconn.toml"]
    secret_mount = next(m for m in container(job)["volumeMounts"] if m["name"] == "credentials")
    assert volumes(job)["credentials"]["secret"]["secretName"] == "bulkconn-credentials"
    assert volumes(job)["credentials"]["secret"]["defaultMode"] == 0o440  # never readable by others
    assert secret_mount["readOnly"] is True
    tenants = tomllib.loads(text)["tenants"].values()
    files = [v for t in tenants for k, v in t.items() if k.endswith("_file")]
    assert {"client_secret_file", "certificate_file"} <= {k for t in tenants for k in t}
    assert all(Path(f).parent == Path(secret_mount["mountPath"]) for f in files)
    local = tmp_path / "secrets"
    local.mkdir()
    key, cert = make_client_certificate("msp-app")
    for f in files:
        content = key + cert if f.endswith(".pem") else "placeholder-secret\n"
        (local / Path(f).name).write_text(content)
        (local / Path(f).name).chmod(0o600)
    config = parse_config(text.replace(secret_mount["mountPath"] + "/", f"{local}/"), file="cm.toml", base=tmp_path)
    assert sorted(config.tenants) == ["contoso", "fabrikam"]
    assert not config.warnings


def test_everything_runs_as_the_images_non_root_user() -> None:
    """Both Jobs run as non-root with no privilege escalation, as the uid the Dockerfile creates."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    for name in ("job.yaml", "merge-job.yaml"):
        manifest = load(name)
        pod = manifest["spec"]["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == user and pod["runAsUser"] != 0
        box = container(manifest)["securityContext"]
        assert box["allowPrivilegeEscalation"] is False and box["capabilities"]["drop"] == ["ALL"]


def test_dockerfile_installs_bulkconn_from_the_repo_and_runs_it() -> None:
    """A slim Python base, bulkconn installed from this repository, `bulkconn` as the entry point."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^ARG PYTHON_VERSION=3\.1[1-9]$", dockerfile, re.MULTILINE)
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE)
    assert entrypoint and json.loads(entrypoint[1]) == ["bulkconn"]
    assert "COPY bulkconn ./bulkconn" in dockerfile
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[:4] == ["*", "!pyproject.toml", "!README.md", "!bulkconn/"]  # an allow-list: no keys or reports
