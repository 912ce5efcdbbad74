"""The transferability probe: per-block linear probes, the quadrant, and the search's prior."""

from __future__ import annotations

import json

import optuna
import pytest
import torch
from click.testing import CliRunner

from autofreeze import records
from autofreeze.build import prepare
from autofreeze.cli import cli
from autofreeze.config import load_config
from autofreeze.probe import assess, block_features, prior_plans, ridge_probe, run_probe
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


@pytest.mark.parametrize(
    ("accuracies", "per_class", "quadrant", "boundary"),
    [
        ((0.5, 0.7, 0.9, 0.92), 15, ("small", "similar"), 4),  # linear probe
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
    feats = block_features(backbone, prepared.train.x[:10], batch=4)
    assert len(feats) == backbone.n_blocks == 5
    assert all(f.shape[0] == 10 for f in feats)
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512]  # resnet10t's widths
    result = run_probe(prepared)
    assert [b["index"] for b in result.blocks] == [0, 1, 2, 3, 4]
    assert all(0.0 <= b["val_accuracy"] <= 1.0 for b in result.blocks)


def test_the_search_probes_stores_the_curve_and_enqueues_its_prior(tmp_path):
    config = write_study(tmp_path, "probed", n_trials=9, epochs=1, probe=True, pruner="none")
    result = CliRunner().invoke(cli, ["search", str(config)])
    assert result.exit_code == 0, result.output
    assert "transferability probe" in result.output and "boundary" in result.output
    study = optuna.load_study(study_name="probed", storage=f"sqlite:///{tmp_path}/probed.db")
    stored = study.user_attrs[records.PROBE]
    assert len(stored["blocks"]) == 5 and stored["size"] == "small"
    trials = study.trials
    assert all(records.baseline(t) for t in trials[:6])
    priors = [t for t in trials if t.user_attrs.get(records.PRIOR)]
    expected = sorted({max(0, min(5, stored["boundary"] + d)) for d in (-1, 0, 1)})
    assert [t.user_attrs["plan"]["boundary"] for t in priors] == expected
    assert priors[0].number == 6  # right after the baselines
    rows = json.loads(CliRunner().invoke(cli, ["trials", str(config), "--json"]).output)
    assert rows[6]["name"].startswith("probe_k")
    probe_json = json.loads(CliRunner().invoke(cli, ["probe", str(config), "--json"]).output)
    assert probe_json["blocks"] == stored["blocks"]  # the same probe, the same figures
