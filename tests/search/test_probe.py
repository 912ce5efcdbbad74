"""The transferability probe: per-block linear probes, the quadrant, and the search's prior."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from autofreeze.cli import cli
from autofreeze.config import load_config
from autofreeze.runs.prepare import prepare
from autofreeze.search.probe import (
    SIMILAR_GAP,
    assess,
    block_features,
    noise,
    prior_plans,
    ridge_probe,
    run_probe,
)
from autofreeze.study import records
from autofreeze.study.storage import load_existing_study
from tests.studies import write_study


def test_the_ridge_probe_reads_linear_signal_and_not_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    signal = torch.randn(120, 16, generator=g)
    signal[torch.arange(120), y] += 3.0  # each class shifts its own direction
    noise = torch.randn(120, 16, generator=g)
    assert ridge_probe(signal[:80], y[:80], signal[80:], y[80:], 3) > 0.8
    assert ridge_probe(noise[:80], y[:80], noise[80:], y[80:], 3) < 0.6
    # more features than images (the dual form), class means spread over all of them as in a
    # network's features (a signal in 3 of 500 dimensions is beyond any 80-image linear probe)
    wide = torch.randn(120, 500, generator=g) + 0.2 * torch.randn(3, 500, generator=g)[y]
    assert ridge_probe(wide[:80], y[:80], wide[80:], y[80:], 3) > 0.8


def curve(*accuracies):
    return [{"index": i, "name": f"b{i}", "val_accuracy": a} for i, a in enumerate(accuracies)]


def test_noise_is_two_standard_errors_of_the_validation_split():
    assert noise(0.9, 100) == pytest.approx(0.06)
    assert noise(0.9, 10_000) == 0.01 and noise(0.9, None) == SIMILAR_GAP
    flat = curve(0.90, 0.92, 0.91, 0.93, 0.92)  # every block alike on 150 images
    assert assess(flat, 15, 0.2, 5, n_val=150).boundary == 1
    # on 100,000 images the noise is 0.01: block 1 is the shallowest within it of block 3
    assert assess(flat, 15, 0.2, 5, n_val=100_000).boundary == 2


@pytest.mark.parametrize(
    ("accuracies", "per_class", "quadrant", "boundary"),
    [
        ((0.5, 0.7, 0.8, 0.92), 15, ("small", "similar"), 4),  # only the top: linear probe
        ((0.5, 0.7, 0.9, 0.92), 15, ("small", "similar"), 3),  # block 2 is as good: freeze 0..2
        ((0.5, 0.8, 0.6, 0.4), 15, ("small", "different"), 2),  # freeze up to the best block
        ((0.5, 0.7, 0.9, 0.92), 500, ("large", "similar"), 2),  # fine-tune the upper half
        ((0.5, 0.8, 0.6, 0.4), 500, ("large", "different"), 0),  # fine-tune everything
    ],
)
def test_the_quadrant_and_the_boundary(accuracies, per_class, quadrant, boundary):
    result = assess(curve(*accuracies), per_class, 0.25, 4)
    assert (result.size, result.similarity) == quadrant
    assert result.boundary == boundary and result.recommendation
    assert [k for _, p in prior_plans(result, 4) for k in [p.boundary]] == sorted(
        {max(0, min(4, boundary + d)) for d in (-1, 0, 1)}
    )


def test_block_features_are_one_pooled_row_per_image_per_block(tmp_path):
    cfg = load_config(write_study(tmp_path, weights="none"))
    prepared = prepare(cfg)
    from autofreeze.plan import FreezePlan

    backbone = prepared.backbone(FreezePlan(boundary=5))
    feats = block_features(backbone, prepared.train.batch(slice(0, 10)), batch=4)
    assert len(feats) == backbone.n_blocks == 5
    assert all(f.shape[0] == 10 for f in feats)
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512]  # resnet10t's widths
    result = run_probe(prepared)
    assert [b["index"] for b in result.blocks] == [0, 1, 2, 3, 4]
    assert all(0.0 <= b["val_accuracy"] <= 1.0 for b in result.blocks)


def test_the_search_probes_stores_the_curve_and_enqueues_its_prior(tmp_path):
    # 13 trials: room for the six recipes and the probe's plans (a third left to the sampler)
    config = write_study(tmp_path, "probed", n_trials=13, epochs=1, probe=True, pruner="none")
    result = CliRunner().invoke(cli, ["search", str(config)])
    assert result.exit_code == 0, result.output
    assert "transferability probe" in result.output and "boundary" in result.output
    study = load_existing_study(f"sqlite:///{tmp_path}/probed.db", "probed")
    stored = records.probe(study)
    assert len(stored["blocks"]) == 5 and stored["size"] == "small"
    trials = study.trials
    assert all(records.baseline(t) for t in trials[:6])
    priors = [t for t in trials if t.user_attrs.get(records.PRIOR)]
    # around the predicted boundary, but not where a static baseline already runs:
    # full_finetune_low_lr (0), freeze_first_half (2) and linear_probe (5)
    expected = sorted({max(0, min(5, stored["boundary"] + d)) for d in (-1, 0, 1)} - {0, 2, 5})
    assert [records.plan(t)["boundary"] for t in priors] == expected
    assert priors[0].number == 6  # right after the baselines
    rows = json.loads(CliRunner().invoke(cli, ["trials", str(config), "--json"]).output)
    assert rows[6]["name"].startswith("probe_k")
    probe_json = json.loads(CliRunner().invoke(cli, ["probe", str(config), "--json"]).output)
    assert probe_json["blocks"] == stored["blocks"]  # the same probe, the same figures


def test_the_prior_leaves_out_boundaries_a_baseline_already_runs():
    curve = [0.5, 0.9, 0.6, 0.5, 0.4]  # block 1 transfers best: freeze 0..1
    blocks = [
        {"index": i, "name": f"b{i}", "features": 8, "val_accuracy": a} for i, a in enumerate(curve)
    ]
    result = assess(blocks, per_class=10, chance=0.2, n_blocks=5)
    assert result.boundary == 2
    assert [p.boundary for _, p in prior_plans(result, 5)] == [1, 2, 3]
    assert [p.boundary for _, p in prior_plans(result, 5, {0, 2, 5})] == [1, 3]
