"""Study config errors end as one clear line with exit code 1 or 2 and leave the study alone."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from autofreeze.cli import cli
from autofreeze.config import load_config
from tests.studies import write_study

CUDA = __import__("torch").cuda.is_available()


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args))


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
    """A study with two finished trials that bad configs must not touch."""
    folder = tmp_path_factory.mktemp("cfg")
    config = write_study(folder, "keep", n_trials=2, study_extra="baselines = false")
    assert run_cli("search", str(config)).exit_code == 0
    return config


def trial_count(config) -> int:
    import optuna

    return len(
        optuna.load_study(study_name="keep", storage=f"sqlite:///{config.parent}/keep.db").trials
    )


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("[training]\n", "[training]\nepochz = 3\n", ["training.epochz", "unknown key"]),
        (
            "epochs = 2\nbatch_size = 8",
            'epochs = "two"\nbatch_size = 8',
            ["training.epochs", "integer"],
        ),
        ("[search]\n", "[search]\nschedules = []\n", ["search.schedules", "at least one"]),
        ("[search]\n", "[search]\nboundary = 9\n", ["boundary", "5 blocks"]),
        ("[search]\n", '[search]\nschedules = ["gradual", "cosine"]\n', ["cosine"]),
        ("[search]\n", "[search]\nhead_lr = [0.1, 0.01]\n", ["search.head_lr", "above high"]),
        ("[search]\n", "[search]\nlayer_decay = [0.5, 2.0]\n", ["layer_decay", "(0, 1]"]),
        ("[search]\n", '[search]\nbn_mode = ["eval", "sometimes"]\n', ["search.bn_mode"]),
        (
            '[dataset]\nname = "synthetic"\nnum_classes',
            '[dataset]\nname = "synthetic"\nnum_clases',
            ["num_clases"],
        ),
        ('name = "resnet10t"', 'name = "resnet10"', ["unknown backbone", "resnet10t"]),
        ("[study]\n", '[study]\nsampler = "bayes"\n', ["study.sampler", "tpe"]),
        ("[search]\n", "[search]\n[search.knobs.gradual]\nevery = [0, 3]\n", ["every=0"]),
        ("[search]\n", "[search]\n[search.knobs.lp_ft]\nlp_epoch = 2\n", ["lp_epoch"]),
        ("[search]\n", "[search]\nhead_lr = nan\n", ["search.head_lr", "> 0"]),
        ("[training]\n", '[training]\ndevice = "banana"\n', ["training.device", "'banana'"]),
        pytest.param(
            "[training]\n",
            '[training]\ndevice = "cuda"\n',
            ['device = "cuda"', "no CUDA device is visible", 'use device = "cpu"'],
            marks=pytest.mark.skipif(CUDA, reason="this machine has a GPU"),
        ),
        ("seed = 0\nreevaluate", "seed = -1\nreevaluate", ["study.seed", "greater than or equal"]),
    ],
)
def test_bad_config_is_one_line_and_leaves_the_study_alone(existing, old, new, needles):
    text = existing.read_text()
    assert old in text
    existing.with_name("keep_bad.toml").write_text(text.replace(old, new, 1))
    before = trial_count(existing)
    result = run_cli("search", str(existing.with_name("keep_bad.toml")))
    assert_one_line_error(result, *needles)
    assert trial_count(existing) == before


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1")
    assert_one_line_error(run_cli("search", str(bad)), "not valid TOML")
    assert_one_line_error(run_cli("search", str(tmp_path / "nope.toml")), "not found")


def test_storage_that_cannot_be_opened_masks_the_password(tmp_path):
    config = write_study(tmp_path, n_trials=1)
    url = "postgresql://autofreeze:s3cret@127.0.0.1:1/nowhere"
    out = assert_one_line_error(run_cli("search", str(config), "--storage", url), "cannot open")
    assert "s3cret" not in out and "***" in out
    out = assert_one_line_error(
        run_cli("best", "--storage", "nosuchdb://x", "--study-name", "a"), "bad storage URL"
    )


def test_usage_errors_exit_2(tmp_path):
    config = write_study(tmp_path, n_trials=1)
    assert run_cli("search", str(config), "--n-trials", "0").exit_code == 2
    assert run_cli("best").exit_code == 2
    assert run_cli("train", str(config), "--out", "x.safetensors").exit_code == 2


def test_cli_flags_override_config_values(tmp_path):
    config = write_study(tmp_path, n_trials=3)
    cfg = load_config(config, {"training.epochs": 7, "study.name": "other"})
    assert cfg.training.epochs == 7 and cfg.study.name == "other"
    assert cfg.storage_url == f"sqlite:///{tmp_path}/other.db"


def test_storage_env_var_wins(tmp_path, monkeypatch):
    config = write_study(tmp_path, n_trials=3)
    monkeypatch.setenv("AUTOFREEZE_STORAGE", "sqlite:///elsewhere.db")
    assert load_config(config).storage_url == "sqlite:///elsewhere.db"
