"""What the frozen-prefix cache holds in memory: an entry once while it is computed, and
nothing of a worker's own between trials (the entries are on disk, mapped by the trial that
reads them)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path

import optuna
import pytest

import autofreeze.search.objective as objective_module
from autofreeze.config import load_config
from autofreeze.runs.prepare import prepare
from autofreeze.search.objective import Objective
from autofreeze.search.run import search_space
from autofreeze.study import records
from tests.studies import write_study

ROOT = Path(__file__).resolve().parents[2]

# Computes the prefix outputs of test_resnet at block 1 (32 x 16 x 16 per 64 px image, 2.7x
# the image's uint8 bytes) for a few thousand images, stored as float32 and as bfloat16, in a
# process of its own: for each, the peak RSS (VmHWM, reset before the call) above the RSS
# before it, and the entry's bytes.
COMPUTE = """
import json, re, torch
from autofreeze.cache.activations import PrefixCache, prefix_features
from autofreeze.data.tensors import TensorSplit
from autofreeze.plan import FreezePlan
from tests.models import make

def status(field):
    text = open("/proc/self/status").read()
    return int(re.search(field + r":\\s+(\\d+)", text).group(1)) * 1024

torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
def split(n):
    x = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)
    return TensorSplit(x, torch.arange(n) % 3, mean=(0.5,) * 3, std=(0.5,) * 3)
train, val = split(3200), split(400)
backbone = make("test_resnet")
plan = FreezePlan(boundary=1, head_lr=1e-3, backbone_lr_ratio=0.1)
prefix_features(backbone, plan, split(64), split(8), PrefixCache(), weights="none", seed=0,
                device="cpu")  # the lazy imports of the first split, outside the figures
got = {}
for dtype in ("float32", "bfloat16"):
    before = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here
    h = prefix_features(backbone, plan, train, val, PrefixCache(), weights="none", seed=0,
                        device="cpu", dtype=dtype)
    got[dtype] = {"rise": status("VmHWM") - before, "entry": h.train.x.nbytes + h.val.x.nbytes}
    del h
print(json.dumps(got))
"""


@pytest.mark.slow  # a process of its own: about 6-10 s
def test_computing_prefix_outputs_holds_them_once():
    """The outputs are written into one tensor as the batches come: computing an entry takes
    its size and a batch's work, not a list of batches joined into a second copy (and, for a
    16-bit cache, a float32 one converted into a third)."""
    out = subprocess.run(
        [sys.executable, "-c", COMPUTE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    for dtype, got in json.loads(out.stdout.strip().splitlines()[-1]).items():
        entry, rise = got["entry"], got["rise"]
        assert entry > 40e6, got  # large enough that a second copy shows above the noise
        assert rise < 1.3 * entry + 20e6, (
            f"{dtype}: computing a {entry / 1e6:.0f} MB entry rose {rise / 1e6:.0f} MB"
        )


FIXED = """boundary = 2
schedules = "static"
init = "{init}"
bn_mode = "eval"
head_lr = 0.003
backbone_lr_ratio = 0.3
layer_decay = 1.0
weight_decay = 0.0"""


def test_a_worker_keeps_no_prefix_outputs_between_trials(tmp_path, monkeypatch):
    """The trial that computes an entry, the one that reads it back and a re-run with another
    seed (a new entry where the weights are random) each free what they trained on when they
    end: the entries are on disk, where a later trial finds them."""
    config = write_study(tmp_path, weights="none", epochs=1, search=FIXED.format(init="scratch"))
    prepared = prepare(load_config(config))
    objective = Objective(prepared, search_space(prepared))
    held: list[weakref.ref] = []
    served = objective_module.prefix_features

    def watched(*args, **kwargs):
        got = served(*args, **kwargs)
        held.extend(weakref.ref(t) for t in (got.train.x, got.val.x))
        return got

    monkeypatch.setattr(objective_module, "prefix_features", watched)
    sources = []
    for seed in (0, 0, 1):
        trial = optuna.trial.FixedTrial({}, number=0)
        for key, value in records.reevaluation_attrs(0, seed).items():
            trial.set_user_attr(key, value)
        objective(trial)
        sources.append(records.cache(trial)["source"])
        gc.collect()
        alive = [r for r in held if r() is not None]
        assert not alive, f"after the run of seed {seed}: {len(alive)} prefix tensors held"
    assert sources == ["computed", "disk", "computed"]
    assert len(list((tmp_path / ".autofreeze-cache").glob("*.pt"))) == 2
