"""The cluster recipes in deploy/ (SLURM batch scripts, Kubernetes manifests) parse, run only
autofreeze commands and options that exist, wire the storage and the artifact folder alike in
every job, and are quoted word for word in docs/distributed.md. The slow tier runs their
proxy, worker and dashboard commands for real (tests/search/test_proxy_artifacts.py)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from string import Template
from typing import Any

import click
import pytest
import yaml

from autofreeze.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs" / "distributed.md"
SLURM = {p.name: p for p in sorted((DEPLOY / "slurm").glob("*.sbatch"))}
K8S = {p.name: p for p in sorted((DEPLOY / "k8s").glob("*.yaml"))}
# what the SLURM scripts' variables stand for in the checks (SLURM sets the SLURM_* ones)
SLURM_VARS = {
    "SHARED": "/shared/autofreeze",
    "PORT": "13000",
    "HOME": "/home/tuner",
    "SLURM_CPUS_PER_TASK": "8",
    "SLURM_ARRAY_TASK_ID": "0",
}


# -- reading the recipes -------------------------------------------------------------------------
def parse_command(argv: list[str]) -> click.Context:
    """``autofreeze ARGS`` through the real CLI's parser (no command runs): an unknown command,
    option or a bad value raises click's usage error, as the command line would."""
    assert argv[0] == "autofreeze", argv
    name, *args = argv[1:]
    with click.Context(cli) as parent:
        command = cli.get_command(parent, name)
        assert command is not None, f"no command autofreeze {name}"
        return command.make_context(name, args, parent=parent)


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(K8S[name].read_text()) if d]


def all_documents() -> list[dict[str, Any]]:
    return [d for name in K8S for d in documents(name)]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(the workload's name, its pod spec) of every Job and Deployment."""
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in all_documents()
        if d["kind"] in ("Job", "Deployment")
    ]


def container(workload: str) -> dict[str, Any]:
    (spec,) = [s for name, s in pod_specs() if name == workload]
    (only,) = spec["containers"]
    return only


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    """A container's environment: a value, or where it comes from (``valueFrom``)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def service(name: str) -> dict[str, Any]:
    (found,) = [
        d for d in all_documents() if d["kind"] == "Service" and d["metadata"]["name"] == name
    ]
    return found


def sbatch_options(text: str) -> dict[str, str]:
    """The ``#SBATCH --key=value`` lines (before the first command, as sbatch reads them)."""
    options = {}
    for line in text.splitlines()[1:]:
        if not line.startswith("#"):
            break
        if line.startswith("#SBATCH"):
            key, _, value = line.split()[1].partition("=")
            options[key] = value
    return options


def shell_commands(text: str) -> list[str]:
    """The script's command lines, comments and blank lines left out."""
    lines = [line.split(" #")[0].strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def expand(line: str, values: dict[str, str]) -> list[str]:
    """A shell line's words with its variables replaced (every one must be known)."""
    words = [Template(w).substitute(values) for w in shlex.split(line)]
    assert not [w for w in words if "$" in w], words
    return words


def autofreeze_lines(text: str) -> list[list[str]]:
    """Every ``autofreeze ...`` command a SLURM script runs (after ``srun``), its words."""
    out = []
    for line in shell_commands(text):
        words = shlex.split(line.removesuffix("&"))  # a command run in the background
        if "autofreeze" in words and not line.startswith(("echo", "export")):
            out.append(expand(" ".join(shlex.quote(w) for w in words), SLURM_VARS))
    return [w[w.index("autofreeze") :] for w in out]


def exported(text: str) -> dict[str, str]:
    """``export NAME=VALUE`` lines of a script, the value's words as written."""
    found = re.findall(r"^\s*export (\w+)=(.*)$", text, re.M)
    return {name: value.split(" #")[0].strip() for name, value in found}


# -- every command exists and parses -------------------------------------------------------------
def test_the_recipes_are_there():
    assert set(SLURM) == {"autofreeze-array.sbatch", "autofreeze-proxy.sbatch"}
    assert set(K8S) == {
        "artifacts.yaml",
        "dashboard.yaml",
        "proxy.yaml",
        "search-job.yaml",
        "worker-job.yaml",
    }


def test_the_command_check_fails_on_an_option_that_does_not_exist():
    """The check below is not blind: a misspelled option, a bad value, an unknown command."""
    parse_command(["autofreeze", "worker", "--study-name", "my", "--wait", "600"])
    for bad in (
        ["autofreeze", "worker", "--study-name", "my", "--wait-for", "600"],
        ["autofreeze", "worker", "--wait", "ten minutes"],
        ["autofreeze", "proxy", "--port", "70000"],
        ["autofreeze", "serve", "--port", "13000"],
    ):
        with pytest.raises((click.UsageError, AssertionError)):
            parse_command(bad)


@pytest.mark.parametrize("name", sorted(K8S))
def test_every_kubernetes_command_parses(name):
    for d in documents(name):
        if d["kind"] in ("Job", "Deployment"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert c["command"][0] == "autofreeze"
                parse_command(c["command"])


@pytest.mark.parametrize("name", sorted(SLURM))
def test_every_slurm_command_parses(name):
    checked = subprocess.run(["bash", "-n", str(SLURM[name])], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr  # the script is valid bash
    lines = autofreeze_lines(SLURM[name].read_text())
    assert lines
    for words in lines:
        parse_command(words)


# -- the wiring: storage through the proxy, one artifact folder ------------------------------
def test_kubernetes_workers_reach_the_database_only_through_the_proxy_service():
    proxy = container("autofreeze-proxy")
    args = parse_command(proxy["command"]).params
    assert args["host"] == "0.0.0.0"  # noqa: S104 (the Service reaches it on the pod's address)
    port = args["port"]
    assert {p["containerPort"] for p in proxy["ports"]} == {port}
    assert proxy["readinessProbe"]["tcpSocket"]["port"] == port
    svc = service("autofreeze-proxy")
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] == port
    pods = [d for d in all_documents() if d["kind"] == "Deployment"]
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in pods}
    assert svc["spec"]["selector"] == labels["autofreeze-proxy"]
    assert deployment_replicas("autofreeze-proxy") == 1  # one cache in front of the database
    # the database URL, password included, only in the proxy, from a Secret
    secret = env_of(proxy)["AUTOFREEZE_STORAGE"]["secretKeyRef"]
    assert secret == {"name": "autofreeze-db", "key": "url"}
    url = f"grpc://{svc['metadata']['name']}:{svc_port['port']}"
    readers = [name for name, _ in pod_specs() if name != "autofreeze-proxy"]
    assert set(readers) == {"autofreeze-search", "autofreeze-workers", "autofreeze-dashboard"}
    for name in readers:
        env = env_of(container(name))
        assert env["AUTOFREEZE_STORAGE"] == url, name
        assert "secretKeyRef" not in repr(container(name)), name
        parse_command(container(name)["command"])  # the URL reaches --storage from the env


def deployment_replicas(name: str) -> int:
    (d,) = [
        d for d in all_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == name
    ]
    return d["spec"]["replicas"]


def test_kubernetes_pods_mount_one_shared_artifact_folder_at_the_same_path():
    (claim,) = [d for d in all_documents() if d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # many pods on many nodes
    paths = {}
    for name, spec in pod_specs():
        (c,) = spec["containers"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
        artifacts = env_of(c).get("AUTOFREEZE_ARTIFACTS")
        if name == "autofreeze-proxy":  # the proxy carries the storage, not the files
            assert artifacts is None and not mounts
            continue
        assert artifacts in mounts, name
        claimed = mounts[artifacts]["persistentVolumeClaim"]["claimName"]
        assert claimed == claim["metadata"]["name"], name
        paths[name] = artifacts
    assert len(set(paths.values())) == 1 and len(paths) == 3, paths
    # the workers write; the dashboard only reads
    dash = container("autofreeze-dashboard")["volumeMounts"]
    assert [m.get("readOnly") for m in dash] == [True]
    assert not [m for m in container("autofreeze-workers")["volumeMounts"] if m.get("readOnly")]


def test_kubernetes_workers_join_the_study_the_search_job_creates():
    search = parse_command(container("autofreeze-search")["command"]).params
    worker = parse_command(container("autofreeze-workers")["command"]).params
    config = Path(search["config"])
    (spec,) = [s for name, s in pod_specs() if name == "autofreeze-search"]
    mounted = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert str(config.parent) in mounted
    assert worker["study_name"] == config.stem  # the config's [study] name, by convention
    assert worker["wait"] >= 120  # started together with the search, they wait for the study
    job = next(d for d in all_documents() if d["metadata"]["name"] == "autofreeze-workers")
    assert job["spec"]["parallelism"] == job["spec"]["completions"]
    # Kubernetes' SIGTERM, then SIGKILL after the grace period: a worker re-queues first
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    limits = container("autofreeze-workers")["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1 and worker["device"] == "cuda"


def test_slurm_workers_reach_the_proxy_the_proxy_job_announces():
    proxy_text = SLURM["autofreeze-proxy.sbatch"].read_text()
    array_text = SLURM["autofreeze-array.sbatch"].read_text()
    (proxy_cmd,) = autofreeze_lines(proxy_text)
    args = parse_command(proxy_cmd).params
    assert args["host"] == "0.0.0.0"  # noqa: S104 (the GPU nodes reach it)
    # the proxy job writes grpc://NODE:PORT into the shared folder; the array reads that file
    commands = shell_commands(proxy_text)
    (announce,) = [line for line in commands if line.startswith("echo")]
    # announced once it answers: a search started on the address finds it listening
    (serve,) = [i for i, line in enumerate(commands) if "autofreeze proxy" in line]
    (ready,) = [i for i, line in enumerate(commands) if line.startswith("until ")]
    assert serve < ready < commands.index(announce) and f"/{args['port']}" in Template(
        commands[ready]
    ).safe_substitute(SLURM_VARS)
    said, _, target = announce.partition(" > ")
    node_url = Template(shlex.split(said)[1]).safe_substitute(SLURM_VARS)  # $(...) stays
    assert node_url == f"grpc://$(hostname):{args['port']}"
    url_file = Template(shlex.split(target)[0]).substitute(SLURM_VARS)
    storage = Template(exported(array_text)["AUTOFREEZE_STORAGE"]).safe_substitute(SLURM_VARS)
    assert storage == f'"$(cat "{url_file}")"'
    # only the proxy reads the database URL
    assert "AUTOFREEZE_STORAGE" in exported(proxy_text)
    assert ".autofreeze-db-url" not in array_text
    # both jobs see the shared folder at one path; the figures go below it
    assert re.search(r"^SHARED=(\S+)", proxy_text, re.M)[1] == SLURM_VARS["SHARED"]
    assert re.search(r"^SHARED=(\S+)", array_text, re.M)[1] == SLURM_VARS["SHARED"]
    artifacts = Template(exported(array_text)["AUTOFREEZE_ARTIFACTS"]).substitute(SLURM_VARS)
    assert artifacts.strip('"').startswith(SLURM_VARS["SHARED"] + "/")


def test_slurm_array_runs_one_search_and_gpu_workers_that_wait_for_it():
    text = SLURM["autofreeze-array.sbatch"].read_text()
    options = sbatch_options(text)
    assert options["--gres"] == "gpu:1" and re.fullmatch(r"0-\d+", options["--array"])
    search, worker = (parse_command(w) for w in autofreeze_lines(text))
    assert search.info_name == "search" and worker.info_name == "worker"
    assert Path(search.params["config"]).stem == worker.params["study_name"]
    assert worker.params["wait"] >= 120 and worker.params["device"] == "cuda"
    assert worker.params["threads"] == int(SLURM_VARS["SLURM_CPUS_PER_TASK"])
    assert options["--cpus-per-task"] == SLURM_VARS["SLURM_CPUS_PER_TASK"]
    assert "--dependency" not in options  # given at submission, with the proxy job's id
    assert sbatch_options(SLURM["autofreeze-proxy.sbatch"].read_text()).get("--gres") is None


# -- the docs quote the files ----------------------------------------------------------------
@pytest.mark.parametrize("path", [*SLURM.values(), *K8S.values()], ids=lambda p: p.name)
def test_the_docs_quote_each_recipe_word_for_word(path):
    """docs/distributed.md shows every file of deploy/ whole, in a code block under its path."""
    text = DOCS.read_text()
    relative = path.relative_to(ROOT).as_posix()
    lang = "yaml" if path.suffix == ".yaml" else "bash"
    block = f"`{relative}`:\n\n```{lang}\n{path.read_text()}```\n"
    assert block in text, f"docs/distributed.md does not quote {relative} as it is"
