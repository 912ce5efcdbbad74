"""Device discovery and fan-out, with the GPU list injected (no GPU needed)."""

from __future__ import annotations

import json
import sys

import pytest

from autofreeze.errors import ConfigError
from autofreeze.search.workers import launch, plan_workers, worker_command


def test_explicit_gpu_ids_get_one_worker_each():
    specs = plan_workers("0,1", gpus=["0", "1", "2"])
    assert [(s.label, s.device, s.env["CUDA_VISIBLE_DEVICES"]) for s in specs] == [
        ("gpu0", "cuda", "0"),
        ("gpu1", "cuda", "1"),
    ]


def test_auto_uses_every_visible_gpu_else_cpu_workers():
    assert [s.label for s in plan_workers("auto", gpus=["0", "3"])] == ["gpu0", "gpu3"]
    cpu = plan_workers("auto", workers=2, gpus=[], cores=2)
    assert [(s.device, s.threads, s.env["CUDA_VISIBLE_DEVICES"]) for s in cpu] == [
        ("cpu", 1, ""),
        ("cpu", 1, ""),
    ]
    assert plan_workers("cpu", gpus=["0"], cores=8)[0].threads == 8


def test_unavailable_or_repeated_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="GPU 2 is not available"):
        plan_workers("0,2", gpus=["0", "1"])
    with pytest.raises(ConfigError, match="listed twice"):
        plan_workers("0,0", gpus=["0", "1"])
    with pytest.raises(ConfigError, match="one worker per GPU"):
        plan_workers("0,1", workers=3, gpus=["0", "1"])


def test_launch_hands_each_worker_process_exactly_one_device():
    """The real fan-out: each child process reports the device environment it was given."""
    specs = plan_workers("0,1", gpus=["0", "1"])
    probe = (
        "import json, os, sys; print(json.dumps({k: os.environ.get(k) for k in "
        "('CUDA_VISIBLE_DEVICES', 'AUTOFREEZE_WORKER', 'OMP_NUM_THREADS', 'AUTOFREEZE_STORAGE')"
        "}), file=sys.stderr)"
    )
    lines: list[tuple[str, str]] = []
    codes = launch(
        specs,
        lambda spec: [sys.executable, "-c", probe],
        lambda label, line: lines.append((label, line)),
        env={"AUTOFREEZE_STORAGE": "sqlite:///x.db"},
    )
    assert codes == [0, 0]
    seen = {label: json.loads(line) for label, line in lines}
    assert seen["gpu0"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert seen["gpu1"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert {v["AUTOFREEZE_WORKER"] for v in seen.values()} == {"gpu0", "gpu1"}
    assert all(v["AUTOFREEZE_STORAGE"] == "sqlite:///x.db" for v in seen.values())


def test_worker_command_keeps_the_storage_url_off_the_command_line():
    (spec,) = plan_workers("0", gpus=["0"])
    cmd = worker_command(spec, "study")
    assert cmd[1:4] == ["-m", "autofreeze", "worker"]
    assert "--device" in cmd and cmd[cmd.index("--device") + 1] == "cuda"
    assert not any("://" in part for part in cmd)


def test_more_cpu_workers_than_cores_is_said(monkeypatch):
    import autofreeze.search.workers as workers

    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(workers, "launch", lambda specs, *a, **k: [0] * len(specs))
    said: list[str] = []
    workers.run_workers(plan_workers("cpu", 8, cores=2), "s", "sqlite:///x.db", said.append)
    assert said[0].startswith("note: 8 CPU workers share 2 cores") and "--workers 2" in said[0]
    said.clear()
    workers.run_workers(plan_workers("cpu", 2, cores=2), "s", "sqlite:///x.db", said.append)
    assert not any(line.startswith("note:") for line in said)
