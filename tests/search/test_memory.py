"""A study's memory: the probe and the re-evaluation hold nothing beyond a training run, so a
study with them (the defaults) peaks where a plain training run does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.studies import write_study

ROOT = Path(__file__).resolve().parents[2]

# test_resnet from random weights at 64 px, 800 training and 2,800 validation images (44 MB of
# uint8; validation is the cheaper pass), every plan at block 1 with random weights
# ("scratch"): its prefix outputs (118 MB) are cached under a key that holds the training seed,
# so each re-run computes an entry of its own, as the re-runs of such a plan do in a study.
CONFIG = """
[study]
name = "{name}"
n_trials = 1
seed = 0
pruner = "none"
baselines = false
dashboard = false
probe = {probe}
reevaluate = {reevaluate}

[backbone]
name = "test_resnet"
weights = "none"

[dataset]
name = "synthetic"
num_classes = 4
train_per_class = 200
val_per_class = 700
image_size = 64

[training]
epochs = 1
batch_size = 64
image_size = 64

[search]
boundary = 1
schedules = "static"
init = "scratch"
bn_mode = "eval"
head_lr = 0.003
backbone_lr_ratio = 0.3
layer_decay = 1.0
weight_decay = 0.0
"""

# What a search does, step by step, in a process of its own: prepare, the probe (if the config
# asks for it), one trial, the re-evaluation's re-run of it with another seed (if it asks);
# then the process's peak RSS (VmHWM).
STUDY = """
import json, re, sys
from pathlib import Path
from autofreeze.config import load_config
from autofreeze.progress import quiet
from autofreeze.runs.prepare import prepare
from autofreeze.search.objective import Objective
from autofreeze.search.probe import run_probe
from autofreeze.search.reevaluation import reevaluate
from autofreeze.search.run import search_space
from autofreeze.search.trials import rerun_plan
from autofreeze.study import open_study, records
from autofreeze.study.allowance import Allowance

cfg = load_config(Path(sys.argv[1]))
prepared = prepare(cfg, progress=quiet)
if cfg.study.probe:
    run_probe(prepared)
objective = Objective(prepared, search_space(prepared))
study = open_study(cfg)
trial = study.ask()
study.tell(trial, objective(trial))
if cfg.study.reevaluate:
    run_plan = rerun_plan(study, objective, quiet)
    reevaluate(study, Allowance(1, 1, 1, None), 0, quiet, run_plan, lambda: float("inf"))
status = open("/proc/self/status").read()
peak = int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) * 1024
print(json.dumps({"peak": peak, "reruns": len(records.reruns(study)), "probe": cfg.study.probe}))
"""

ENTRY = 4 * 900 * 32 * 16 * 16 * 4  # the prefix outputs of one seed: 118 MB


@pytest.mark.slow  # two processes side by side, the default one probes and trains twice: ~15 s
def test_the_default_study_peaks_where_a_plain_training_run_does(tmp_path):
    """The defaults (the probe, then the trial, then its re-run with another seed) against the
    same trial alone: the probe's pass and the re-run take a trial's memory while they run and
    leave none behind, so the peaks differ by less than half an entry. Before, the worker kept
    the trial's entry while the re-run computed its own (and computing one held it twice): the
    default study peaked an entry above the plain run (1,286 against 1,145 MB; 1,088 against
    1,067 MB after)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = {}
    for name, probe, reevaluate in (("plain", "false", 0), ("default", "true", 3)):
        config = tmp_path / name / "study.toml"
        config.parent.mkdir()
        config.write_text(CONFIG.format(name=name, probe=probe, reevaluate=reevaluate))
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", STUDY, str(config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    got = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        got[name] = json.loads(out.strip().splitlines()[-1])
    plain, default = got["plain"], got["default"]
    assert default["reruns"] == 1 and default["probe"] and not plain["probe"]
    assert len(list((tmp_path / "default" / ".autofreeze-cache").glob("*.pt"))) == 2  # 2 seeds
    mb = {k: round(v["peak"] / 1e6) for k, v in got.items()}
    assert default["peak"] - plain["peak"] < ENTRY / 2, f"peak RSS MB: {mb}"


# The probe over 15,000 images of 8 px with resnet10t (pooled widths 64, 64, 128, 256, 512:
# 4 KB of features an image, 61 MB for all, against 2.9 MB of uint8 images), after a first
# probe on 1,250 such images (the allocations of a first pass of these shapes): the peak RSS
# above the RSS before it (VmHWM, reset), and the blocks' widths.
PROBE = """
import json, re, sys, torch
from dataclasses import replace
from pathlib import Path
from autofreeze.config import load_config
from autofreeze.data.tensors import TensorSplit
from autofreeze.progress import quiet
from autofreeze.runs.prepare import prepare
from autofreeze.search.probe import run_probe

def status(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

prepared = prepare(load_config(Path(sys.argv[1])), progress=quiet)
g = torch.Generator().manual_seed(0)
def split(n):
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return TensorSplit(x, torch.arange(n) % 3, mean=prepared.train.mean, std=prepared.train.std)
run_probe(replace(prepared, train=split(1000), val=split(250)))
big = replace(prepared, train=split(12000), val=split(3000))
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
result = run_probe(big)
print(json.dumps({"rise": (status("VmHWM") - before) * 1024,
                  "features": [b["features"] for b in result.blocks]}))
"""


@pytest.mark.slow  # a process of its own, 16,250 images through resnet10t: 8-12 s
def test_the_probe_holds_no_blocks_features_for_every_image(tmp_path):
    """The probe reduces each block's features to its ridge fit's sums as the batches come
    (and scores the validation batches as they come): its peak does not grow with the images
    times the features, which it held for every block and image (and joined, a second copy)."""
    config = write_study(tmp_path, weights="none", size=8)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["features"] == [64, 64, 128, 256, 512]
    every = 15_000 * sum(got["features"]) * 4  # every block's features of every image: 61 MB
    assert got["rise"] < every / 2, f"the probe rose {got['rise'] / 1e6:.0f} MB"
