"""`autofreeze dashboard` serves the study: trials are read back through its HTTP API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import optuna


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_dashboard_serves_the_study_with_plans_as_user_attrs(tmp_path):
    url = f"sqlite:///{tmp_path}/dash.db"
    study = optuna.create_study(study_name="dash", storage=url, direction="maximize")
    for i in range(3):
        trial = study.ask()
        trial.set_user_attr("plan", {"boundary": i, "schedule": "static"})
        study.tell(trial, 0.5 + i / 10)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autofreeze", "dashboard", "--storage", url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        studies = None
        while time.monotonic() < deadline:
            try:
                studies = get(f"http://127.0.0.1:{port}/api/studies")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.3)
        assert studies is not None, "dashboard did not answer within 60 s"
        (summary,) = [s for s in studies["study_summaries"] if s["study_name"] == "dash"]
        detail = get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
        assert len(detail["trials"]) == 3
        values = sorted(t["values"][0] for t in detail["trials"])
        assert values == [0.5, 0.6, 0.7]
        attrs = detail["trials"][2]["user_attrs"]
        assert any(a["key"] == "plan" and "boundary" in a["value"] for a in attrs)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
