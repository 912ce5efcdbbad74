"""Study config errors end as one clear line with exit code 1 or 2 and leave the study alone."""

# ruff: noqa: E501  (the bad-input table reads best one row per line)

from __future__ import annotations

import shutil
import subprocess

import pytest

from autofreeze.config import load_config
from tests.commands import invoke
from tests.studies import write_study

CUDA = __import__("torch").cuda.is_available()


def assert_one_line_error(result, *needles: str, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert len(lines) == 1 if code == 1 else lines[-1].startswith("Error:"), result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    """A study with two finished trials that bad input must not touch, and bad files beside it."""
    import argparse

    import torch

    from autofreeze.plugins.registry import Registry

    folder = tmp_path_factory.mktemp("cfg")
    config = write_study(folder, "keep", n_trials=2, study_extra="baselines = false")
    assert invoke("search", str(config)).exit_code == 0
    (folder / "garbage.pth").write_bytes(b"\x00\x01 not a checkpoint " * 8)
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, folder / "namespace.pth")
    other = Registry().create_backbone("test_resnet", num_classes=3).model.state_dict()
    torch.save(other, folder / "other.pth")  # weights of another architecture
    (folder / "notes.db").write_text("not a database")
    (folder / "afile").write_text("")
    (folder / "empty_images").mkdir()
    (folder / "bad_images" / "cat").mkdir(parents=True)
    (folder / "bad_images" / "dog").mkdir()
    for name in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"):
        (folder / "bad_images" / name).write_bytes(b"\x89PNG not really")
    (folder / "labels.csv").write_text("file,label\nbad_images/cat/a.png,cat\n")
    yield config
    subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)


def study_bytes(config) -> list[tuple]:
    """Every row the study database holds, in order: byte-identical means nothing changed."""
    import sqlite3

    with sqlite3.connect(config.parent / "keep.db") as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [
            (t, con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()) for t in sorted(tables)
        ]


def section(name: str, body: str) -> tuple[str, str]:
    """An edit replacing the whole ``[name]`` table (up to the next table) by ``body``."""
    return (f"[{name}]\n", f"[{name}]\n{body}\n")


DATASET = '[dataset]\nname = "synthetic"\nnum_classes = 3\ntrain_per_class = 8\nval_per_class = 6\nimage_size = 16\n'  # noqa: E501


def dataset(body: str) -> tuple[str, str]:
    return (DATASET, f"[dataset]\n{body}\n")


PRETRAIN = '[backbone.pretrain]\nepochs = 2\nbatch_size = 16\n\n[backbone.pretrain.dataset]\nname = "synthetic"\nnum_classes = 4\ntrain_per_class = 12\nval_per_class = 4\nimage_size = 16\nseed = 7\n'  # noqa: E501
IMMUTABLE = "immutable"  # the row copies the study database and makes the copy immutable

# (what the row is, an edit of the config text (old, new) or None, extra CLI args, words the
# one-line error must hold, exit code); {dir} is the folder of the study and its bad files
BAD_INPUTS = [
    ("unknown key", ("[training]\n", "[training]\nepochz = 3\n"), [], ["training.epochz", "unknown key"], 1),
    ("wrong type", ("epochs = 2\nbatch_size = 8", 'epochs = "two"\nbatch_size = 8'), [], ["training.epochs", "integer"], 1),
    ("empty schedules", ("[search]\n", "[search]\nschedules = []\n"), [], ["search.schedules", "at least one"], 1),
    ("boundary too deep", ("[search]\n", "[search]\nboundary = 9\n"), [], ["boundary", "5 blocks"], 1),
    ("unknown schedule", ("[search]\n", '[search]\nschedules = ["gradual", "cosine"]\n'), [], ["cosine"], 1),
    ("inverted range", ("[search]\n", "[search]\nhead_lr = [0.1, 0.01]\n"), [], ["search.head_lr", "above high"], 1),
    ("decay out of range", ("[search]\n", "[search]\nlayer_decay = [0.5, 2.0]\n"), [], ["layer_decay", "(0, 1]"], 1),
    ("unknown BN mode", ("[search]\n", '[search]\nbn_mode = ["eval", "sometimes"]\n'), [], ["search.bn_mode"], 1),
    ("misspelt dataset option", ("num_classes = 3", "num_clases = 3"), [], ["num_clases"], 1),
    ("unknown backbone", ('name = "resnet10t"', 'name = "resnet10"'), [], ["unknown backbone", "resnet10t"], 1),
    ("unknown sampler", ("[study]\n", '[study]\nsampler = "bayes"\n'), [], ["study.sampler", "tpe"], 1),
    ("unknown pruner", ('pruner = "median"', 'pruner = "sometimes"'), [], ["study.pruner", "percentile"], 1),
    ("knob out of range", ("[search]\n", "[search]\n[search.knobs.gradual]\nevery = [0, 3]\n"), [], ["every=0"], 1),
    ("unknown knob", ("[search]\n", "[search]\n[search.knobs.lp_ft]\nlp_epoch = 2\n"), [], ["lp_epoch"], 1),
    ("NaN learning rate", ("[search]\n", "[search]\nhead_lr = nan\n"), [], ["search.head_lr", "> 0"], 1),
    ("negative seed", ("seed = 0\nreevaluate", "seed = -1\nreevaluate"), [], ["study.seed", "greater than or equal"], 1),
    ("unknown dataset", dataset('name = "digitz"'), [], ["unknown dataset 'digitz'", "digits"], 1),
    ("missing image folder", dataset('name = "imagefolder"\npath = "{dir}/flowers"'), [], ["dataset folder not found", "flowers"], 1),
    ("empty image folder", dataset('name = "imagefolder"\npath = "{dir}/empty_images"'), [], ["empty_images has no class sub-folders"], 1),
    ("corrupt image", dataset('name = "imagefolder"\npath = "{dir}/bad_images"\nval_fraction = 0.5'), [], ["cannot decode image file", "bad_images/"], 1),
    ("missing CSV file", dataset('name = "csv"\npath = "{dir}/nope.csv"'), [], ["nope.csv"], 1),
    ("CSV without its column", dataset('name = "csv"\npath = "{dir}/labels.csv"'), [], ["labels.csv", "path"], 1),
    ("missing weights, no pretraining", [('weights = "weights/source.safetensors"', 'weights = "{dir}/missing.safetensors"'), (PRETRAIN, "")], [], ["missing.safetensors", "does not exist"], 1),
    ("garbage weights", ('weights = "weights/source.safetensors"', 'weights = "{dir}/garbage.pth"'), [], ["cannot read weights file", "garbage.pth"], 1),
    ("pickled object in weights", ('weights = "weights/source.safetensors"', 'weights = "{dir}/namespace.pth"'), [], ["argparse.Namespace", "weights_only=True", "state_dict()"], 1),
    ("weights of another model", ('weights = "weights/source.safetensors"', 'weights = "{dir}/other.pth"'), [], ["other.pth", "does not match backbone 'resnet10t'"], 1),
    ("bad storage URL", None, ["--storage", "nosuchdb://x"], ["bad storage URL"], 1),
    ("unreachable database", None, ["--storage", "postgresql://af:s3cret@127.0.0.1:1/x"], ["cannot open storage", "af:***@"], 1),
    ("SQLite file that is not a database", None, ["--storage", "sqlite:///{dir}/notes.db"], ["notes.db", "not a database"], 1),
    ("SQLite path under a file", None, ["--storage", "sqlite:///{dir}/afile/x.db"], ["afile is a file, not a folder"], 1),
    ("immutable SQLite file", None, ["--storage", IMMUTABLE], ["cannot write to SQLite file", "read-only or immutable"], 1),
    ("another training config", ("epochs = 2\nbatch_size = 8", "epochs = 3\nbatch_size = 8"), [], ["holds 2 trials of another config", "[training] epochs was 2, now 3"], 1),
    ("another metric", ("[study]\n", '[study]\nmetric = "val_loss"\n'), [], ["the study maximizes", "val_loss"], 1),
    ("unknown device", ("[training]\n", '[training]\ndevice = "banana"\n'), [], ["training.device", "'banana'"], 1),
    ("cached views without augmentation", ("[training]\n", "[training]\ncached_views = 4\n"), [], ["cached_views", "no plan is augmented", "[search] augment"], 1),
    ("unknown augmentation", ("[search]\n", '[search]\naugment = ["crop", "randaugment"]\n'), [], ["search.augment", "'trivial'"], 1),
    pytest.param(
        "absent GPU", ("[training]\n", '[training]\ndevice = "cuda"\n'), [], ['device = "cuda"', "no CUDA device is visible", 'use device = "cpu"'], 1,
        marks=pytest.mark.skipif(CUDA, reason="this machine has a GPU"),
    ),
    pytest.param(
        "absent GPU id", None, ["--devices", "3"], ["--devices '3'", "not available"], 1,
        marks=pytest.mark.skipif(CUDA, reason="this machine has a GPU"),
    ),
    ("zero trials", None, ["--n-trials", "0"], ["--n-trials"], 2),
    ("zero workers", None, ["--workers", "0"], ["--workers"], 2),
    ("negative timeout", None, ["--timeout", "-5"], ["--timeout"], 2),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "edit", "args", "needles", "code"),
    BAD_INPUTS,
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input_is_one_line_and_leaves_the_study_byte_identical(
    existing, what, edit, args, needles, code
):
    folder = existing.parent
    text = existing.read_text()
    for old, new in [edit] if isinstance(edit, tuple) else edit or []:
        assert old in text, what
        text = text.replace(old, new.replace("{dir}", str(folder)), 1)
    bad = existing.with_name("keep_bad.toml")
    bad.write_text(text)
    args = [a.replace("{dir}", str(folder)) for a in args]
    if IMMUTABLE in args:
        copy = folder / "frozen" / "keep.db"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(folder / "keep.db", copy)
        if subprocess.run(["chattr", "+i", str(copy)], capture_output=True).returncode:
            pytest.skip("chattr +i is not supported on this filesystem")
        args[args.index(IMMUTABLE)] = f"sqlite:///{copy}"
    before = study_bytes(existing)
    files = sorted(p.name for p in folder.rglob("*"))
    result = invoke("search", str(bad), *args)
    assert_one_line_error(result, *needles, code=code)
    assert study_bytes(existing) == before, what
    assert sorted(p.name for p in folder.rglob("*")) == files, "a bad input left a file behind"


def test_the_bad_input_table_covers_every_kind():
    assert len(BAD_INPUTS) >= 30


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1")
    assert_one_line_error(invoke("search", str(bad)), "not valid TOML")
    assert_one_line_error(invoke("search", str(tmp_path / "nope.toml")), "not found")


def test_storage_that_cannot_be_opened_masks_the_password(tmp_path):
    config = write_study(tmp_path, n_trials=1)
    url = "postgresql://autofreeze:s3cret@127.0.0.1:1/nowhere"
    out = assert_one_line_error(invoke("search", str(config), "--storage", url), "cannot open")
    assert "s3cret" not in out and "***" in out
    out = assert_one_line_error(
        invoke("best", "--storage", "nosuchdb://x", "--study-name", "a"), "bad storage URL"
    )


def test_usage_errors_exit_2(tmp_path):
    config = write_study(tmp_path, n_trials=1)
    assert invoke("search", str(config), "--n-trials", "0").exit_code == 2
    assert invoke("best").exit_code == 2
    assert invoke("train", str(config), "--out", "x.safetensors").exit_code == 2


def test_cli_flags_override_config_values(tmp_path):
    config = write_study(tmp_path, n_trials=3)
    cfg = load_config(config, {"training.epochs": 7, "study.name": "other"})
    assert cfg.training.epochs == 7 and cfg.study.name == "other"
    assert cfg.storage_url == f"sqlite:///{tmp_path}/other.db"


def test_storage_env_var_wins(tmp_path, monkeypatch):
    config = write_study(tmp_path, n_trials=3)
    monkeypatch.setenv("AUTOFREEZE_STORAGE", "sqlite:///elsewhere.db")
    assert load_config(config).storage_url == "sqlite:///elsewhere.db"
