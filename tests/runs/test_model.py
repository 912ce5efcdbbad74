"""The delivered model: train with a held-out test split, evaluate, predict, autofreeze.load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import autofreeze
from autofreeze.plugins.builtin.datasets import digits
from tests.commands import invoke

CONFIG = """
[study]
name = "held"
n_trials = 2
baselines = false
reevaluate = 0
pruner = "none"

[backbone]
name = "resnet10t"

[dataset]
name = "digits"
classes = [0, 1, 2]
train_per_class = 12
val_per_class = 10
test_per_class = 20

[training]
epochs = 3
batch_size = 12
image_size = 16

[search]
boundary = [2, 5]
schedules = "static"
init = "pretrained"
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    config = folder / "held.toml"
    config.write_text(CONFIG)
    assert invoke("search", str(config)).exit_code == 0
    out = folder / "final.safetensors"
    result = invoke("train", str(config), "--best", "--out", str(out))
    assert result.exit_code == 0, result.output
    return config, out, result.output


def test_train_best_delivers_the_final_model_on_train_and_val_with_its_test_accuracy(trained):
    _, out, output = trained
    assert "trained on train+val" in output and "(seen in training)" in output
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["trained_on"] == "train+val"
    assert 0.0 <= sidecar["metrics"]["test_accuracy"] <= 1.0
    assert f"test_accuracy {sidecar['metrics']['test_accuracy']:.4f}" in output
    assert sidecar["dataset"]["name"] == "digits" and sidecar["dataset"]["test_per_class"] == 20


def test_evaluate_reports_the_test_split_the_search_never_saw(trained):
    _, out, _ = trained
    report = json.loads(invoke("evaluate", str(out), "--json").output)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert report["images"] == 60 and report["data"] == "test"
    assert report["accuracy"] == pytest.approx(sidecar["metrics"]["test_accuracy"])
    confusion = np.array(report["confusion"])
    assert confusion.sum() == 60 and confusion.sum(1).tolist() == [20, 20, 20]
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / 60)
    per_class = report["per_class"]["1"]
    assert per_class["accuracy"] == pytest.approx(confusion[1, 1] / 20)
    text = invoke("evaluate", str(out)).output
    assert "accuracy" in text and "confusion" in text and "true \\ predicted" in text
    val = json.loads(invoke("evaluate", str(out), "--split", "val", "--json").stdout)
    assert val["images"] == 30


def write_digit_folder(folder, classes=("0", "1", "2"), per_class=4):
    ds = digits(classes=[int(c) for c in classes], test_per_class=per_class, seed=5)
    paths = []
    for image, label in zip(ds.test.images, ds.test.labels, strict=True):
        path = folder / classes[label] / f"{len(paths)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


def test_evaluate_a_folder_and_predict_images(trained, tmp_path):
    _, out, _ = trained
    paths = write_digit_folder(tmp_path / "more")
    report = json.loads(
        invoke("evaluate", str(out), "--data", str(tmp_path / "more"), "--json").output
    )
    assert report["images"] == 12
    rows = json.loads(invoke("predict", str(out), *paths[:3], "--json").output)
    assert [r["image"] for r in rows] == paths[:3]
    assert all(r["class"] in ("0", "1", "2") and 0 < r["probability"] <= 1 for r in rows)
    # the Python API gives the same answers in three lines
    model = autofreeze.load(out)
    assert [(r["class"], r["probability"]) for r in rows] == [
        (c, round(p, 4)) for c, p in model.predict(paths[:3])
    ]
    assert model.classes == ["0", "1", "2"] and model.image_size == 16


def test_evaluation_errors_are_one_line(trained, tmp_path):
    _, out, _ = trained
    write_digit_folder(tmp_path / "other", classes=("0", "7"))
    for args, words in (
        (["--data", str(tmp_path / "other")], "class folders the model does not know: 7"),
        (["--data", str(tmp_path / "nowhere")], "nowhere"),
    ):
        result = invoke("evaluate", str(out), *args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code in (1, 2) and len(lines) <= 3 and words in result.output
    no_test = tmp_path / "nt.safetensors"
    config = tmp_path / "nt.toml"
    config.write_text(CONFIG.replace("test_per_class = 20\n", ""))
    assert (
        invoke("train", str(config), "--param", "boundary=5", "--out", str(no_test)).exit_code == 0
    )
    result = invoke("evaluate", str(no_test))
    assert result.exit_code == 1 and "has no test split" in result.output


def test_predict_takes_one_image_as_an_array_or_a_path_and_a_batch_as_one_array(trained, tmp_path):
    from autofreeze.errors import DatasetError

    _, out, _ = trained
    model = autofreeze.load(out)
    paths = write_digit_folder(tmp_path / "one", per_class=2)
    grey = [np.asarray(Image.open(p)) for p in paths]  # 8 x 8 uint8, as the digits are
    rgb = [np.repeat(g[:, :, None], 3, axis=2) for g in grey]
    expected = model.predict(paths)

    def same(got: tuple[str, float], want: tuple[str, float]) -> bool:
        # one image and a batch of six run different kernels: the last bits may differ
        return got[0] == want[0] and got[1] == pytest.approx(want[1], rel=1e-5)

    assert len(expected) == 6 and same(model.predict(paths[0]), expected[0])
    for one in (grey[0], rgb[0], rgb[0].transpose(2, 0, 1), rgb[0] / 255.0, Image.open(paths[0])):
        assert same(model.predict(one), expected[0]), getattr(one, "shape", one)
    batch = model.predict(np.stack(rgb))  # N x H x W x C
    assert len(batch) == 6 and all(same(g, w) for g, w in zip(batch, expected, strict=True))
    assert model.predict(np.stack(rgb).transpose(0, 3, 1, 2)) == expected  # N x C x H x W
    assert model.predict([g.astype(np.float32) / 255 for g in grey]) == expected
    for shape in ((8,), (5, 8, 8), (2, 5, 8, 8), (1, 2, 3, 8, 8)):
        with pytest.raises(DatasetError) as err:
            model.predict(np.zeros(shape, dtype=np.uint8))
        message = str(err.value)
        assert f"shape {shape}" in message and "H x W x C or C x H x W" in message
        assert "N x H x W x C or N x C x H x W" in message and "\n" not in message


def test_a_model_reads_in_a_few_lines(trained):
    _, out, _ = trained
    model = autofreeze.load(out)
    text = repr(model)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert len(text.splitlines()) <= 5, text
    assert text.startswith("Model(resnet10t, 3 classes: 0, 1, 2; input 16x16 RGB")
    frozen = ", ".join(sidecar["frozen_blocks"]) or "none"
    assert f"plan: boundary {sidecar['plan']['boundary']} (frozen: {frozen})" in text
    assert "trained on train+val" in text and f"from {out}, study 'held')" in text
    assert "Conv2d" not in text  # the torch module is model.module


def test_evaluate_says_when_the_split_was_seen_in_training(trained, tmp_path):
    _, out, _ = trained  # trained on train+val (`train --best`)
    val = invoke("evaluate", str(out), "--split", "val", "--json")
    assert val.exit_code == 0 and json.loads(val.stdout)["seen_in_training"] is True
    (note,) = val.stderr.strip().splitlines()
    assert note == (
        f"note: {out} was trained on train+val: its val images were seen in training, so this "
        "accuracy overstates what it does on new images; --split test or --data PATH measures "
        "that"
    )
    text = invoke("evaluate", str(out), "--split", "train")
    assert "train images were seen in training" in text.stderr
    assert (
        text.stdout.startswith(f"{out} on train: accuracy ")
        and ", seen in training)" in text.stdout
    )
    held = invoke("evaluate", str(out), "--json")  # the test split: never seen
    assert json.loads(held.stdout)["seen_in_training"] is False and held.stderr == ""
    paths = write_digit_folder(tmp_path / "more")
    folder = invoke("evaluate", str(out), "--data", str(tmp_path / "more"), "--json")
    assert json.loads(folder.stdout)["seen_in_training"] is False and folder.stderr == ""
    assert len(paths) == 12
