"""``[study] artifacts``: a folder, an S3 or a GCS bucket (Optuna's three artifact stores),
overridden per machine by ``AUTOFREEZE_ARTIFACTS``; a bucket whose client library is missing
or that does not answer is one line before any study is touched. The bucket stores' own cases
run where boto3 or google-cloud-storage is installed (``autofreeze[s3]``, ``autofreeze[gcs]``;
neither is in the dev install). The shared folder with real workers behind the proxy:
tests/search/test_proxy_artifacts.py."""

from __future__ import annotations

import io
import sys

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from autofreeze.config import ArtifactLocation, load_config, parse_config
from autofreeze.errors import ConfigError, StorageError
from autofreeze.study.artifacts import (
    CONNECT_TIMEOUT,
    PrefixedStore,
    check_artifact_store,
    open_artifact_store,
)
from tests.commands import invoke
from tests.processes import free_port
from tests.studies import write_study

LIBRARIES = {
    "s3": ("boto3", "boto3", "s3"),
    "gs": ("google.cloud.storage", "google-cloud-storage", "gcs"),
}


def config_with(tmp_path, artifacts: str, **fields):
    return write_study(
        tmp_path, "figs", study_extra=f'artifacts = "{artifacts}"', dashboard=True, **fields
    )


# -- what [study] artifacts means ----------------------------------------------------------------
def test_a_folder_is_resolved_beside_the_config_and_a_bucket_is_kept(tmp_path):
    default = load_config(write_study(tmp_path, "figs", dashboard=True))
    assert default.artifacts == ArtifactLocation("", path=str(tmp_path / "figs-artifacts"))
    relative = load_config(config_with(tmp_path, "shared/figures"))
    assert relative.artifacts.path == str(tmp_path / "shared" / "figures")
    s3 = load_config(config_with(tmp_path, "s3://team-figures/studies/figs/"))
    assert s3.artifacts == ArtifactLocation("s3", bucket="team-figures", prefix="studies/figs")
    assert str(s3.artifacts) == "s3://team-figures/studies/figs"
    gs = load_config(config_with(tmp_path, "gs://team.figures"))
    assert gs.artifacts == ArtifactLocation("gs", bucket="team.figures")
    assert str(gs.artifacts) == "gs://team.figures"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("http://figures.example.org/x", "is a folder, s3://BUCKET[/PREFIX] or gs://"),
        ("file:///shared/figures", "is a folder, s3://BUCKET[/PREFIX] or gs://"),
        ("s3://", "names a bucket after s3://"),
        ("gs://Team_Figures/x", "names a bucket after gs://"),
    ],
)
def test_another_kind_of_url_is_one_line_naming_the_key(tmp_path, value, said):
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, value))
    text = str(caught.value)
    assert "artifacts" in text and said in text and value in text and "\n" not in text.strip()


def test_autofreeze_artifacts_beats_the_file_and_the_stored_config(tmp_path, monkeypatch):
    """A worker on another machine runs the config its study stored: the environment variable
    says where the shared folder is mounted there."""
    path = config_with(tmp_path, "here/figures")
    stored = load_config(path).to_dict()
    monkeypatch.setenv("AUTOFREEZE_ARTIFACTS", "/mnt/shared/figures")
    assert load_config(path).artifacts.path == "/mnt/shared/figures"
    assert parse_config(stored, path=tmp_path / "x.toml").artifacts.path == "/mnt/shared/figures"
    monkeypatch.setenv("AUTOFREEZE_ARTIFACTS", "s3://team-figures/figs")
    assert str(parse_config(stored).artifacts) == "s3://team-figures/figs"
    monkeypatch.setenv("AUTOFREEZE_ARTIFACTS", "ftp://nope")
    with pytest.raises(ConfigError, match="artifacts"):
        parse_config(stored)


# -- the prefix ----------------------------------------------------------------------------------
def test_a_prefixed_store_keeps_every_key_under_its_prefix(tmp_path):
    """Optuna's bucket stores use the artifact id as the whole key: the prefix goes in front
    (shown here on Optuna's folder store, which keys by file name the same way)."""
    store = PrefixedStore(FileSystemArtifactStore(str(tmp_path)), "team/figs")
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "figs").mkdir()
    study = optuna.create_study()
    source = tmp_path / "figure.png"
    source.write_bytes(b"\x89PNG picture")
    aid = upload_artifact(artifact_store=store, file_path=str(source), study_or_trial=study)
    assert (tmp_path / "team" / "figs" / aid).read_bytes() == b"\x89PNG picture"
    assert not (tmp_path / aid).exists()
    with store.open_reader(aid) as reader:
        assert reader.read() == b"\x89PNG picture"
    store.write("other", io.BytesIO(b"x"))
    store.remove(aid)
    assert sorted(p.name for p in (tmp_path / "team" / "figs").iterdir()) == ["other"]


def test_a_folder_is_never_checked_and_made_only_when_asked(tmp_path):
    where = ArtifactLocation("", path=str(tmp_path / "a" / "b"))
    check_artifact_store(where)  # a folder's trouble is a note during the search, not here
    assert not (tmp_path / "a").exists()
    open_artifact_store(where, create=False)
    assert not (tmp_path / "a").exists()
    assert isinstance(open_artifact_store(where), FileSystemArtifactStore)
    assert (tmp_path / "a" / "b").is_dir()


# -- a bucket that cannot be used: one line, no study ----------------------------------------
def assert_one_line_and_no_study(result, tmp_path, said: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output and lines[-1].startswith("Error: "), result.output
    assert said in lines[-1], lines[-1]
    assert not (tmp_path / "figs.db").exists()  # the search created nothing


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_bucket_without_its_client_library_is_one_line_and_no_study(
    tmp_path, monkeypatch, scheme
):
    module, package, extra = LIBRARIES[scheme]
    monkeypatch.setitem(sys.modules, module, None)  # `import` fails as if it were not installed
    config = config_with(tmp_path, f"{scheme}://team-figures/figs")
    said = f"[study] artifacts {scheme}://team-figures/figs is Optuna's"
    result = invoke("search", str(config))
    assert_one_line_and_no_study(result, tmp_path, said)
    assert f"needs {package}: pip install 'autofreeze[{extra}]'" in result.output
    # the dashboard says the same, before it serves anything
    optuna.create_study(study_name="figs", storage=f"sqlite:///{tmp_path}/other.db")
    result = invoke(
        "dashboard",
        "--storage",
        f"sqlite:///{tmp_path}/other.db",
        "--artifacts",
        f"{scheme}://team-figures/figs",
    )
    assert result.exit_code == 1 and f"needs {package}" in result.output.splitlines()[-1]


def test_a_worker_checks_the_bucket_before_it_touches_the_study(tmp_path, monkeypatch):
    """The worker reads the study's stored config, then checks its bucket: nothing is claimed,
    nothing is run, the queued first plans still wait."""
    from autofreeze.progress import quiet
    from autofreeze.search.run import prepare_search

    url = f"sqlite:///{tmp_path}/figs.db"
    path = write_study(tmp_path, "figs", weights="none", dashboard=True)
    study, _, _ = prepare_search(load_config(path, {"study.storage": url}), progress=quiet)
    before = [(t.number, t.state) for t in study.get_trials()]
    assert before and {s for _, s in before} == {optuna.trial.TrialState.WAITING}
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setenv("AUTOFREEZE_ARTIFACTS", "s3://team-figures/figs")
    result = invoke("worker", "--storage", url, "--study-name", "figs", "--wait", "0")
    assert result.exit_code == 1 and "needs boto3" in result.output.splitlines()[-1]
    after = optuna.load_study(study_name="figs", storage=url).get_trials()
    assert [(t.number, t.state) for t in after] == before


# -- the bucket stores themselves, where their client library is installed -----------------
@pytest.fixture
def s3_endpoint(monkeypatch):
    """An S3 endpoint on this machine where nothing listens, and credentials boto3 accepts."""
    pytest.importorskip("boto3")
    endpoint = f"http://127.0.0.1:{free_port()}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    return endpoint


def test_s3_is_optunas_boto3_store_on_the_bucket_with_the_prefix(s3_endpoint):
    from optuna.artifacts import Boto3ArtifactStore

    store = open_artifact_store(ArtifactLocation("s3", bucket="team-figures", prefix="figs"))
    assert isinstance(store, PrefixedStore) and store.prefix == "figs"
    assert isinstance(store.store, Boto3ArtifactStore) and store.store.bucket == "team-figures"
    client = store.store.client
    assert client.meta.endpoint_url == s3_endpoint  # AWS_ENDPOINT_URL, as boto3 reads it
    assert client.meta.config.connect_timeout == CONNECT_TIMEOUT
    plain = open_artifact_store(ArtifactLocation("s3", bucket="team-figures"))
    assert isinstance(plain, Boto3ArtifactStore)


def test_an_s3_bucket_that_does_not_answer_is_one_line_and_no_study(tmp_path, s3_endpoint):
    with pytest.raises(StorageError, match="cannot reach the artifact store s3://team-figures"):
        check_artifact_store(ArtifactLocation("s3", bucket="team-figures", prefix="figs"))
    result = invoke("search", str(config_with(tmp_path, "s3://team-figures/figs")))
    assert_one_line_and_no_study(
        result, tmp_path, "cannot reach the artifact store s3://team-figures/figs ([study] "
    )
    assert s3_endpoint.rsplit(":", 1)[1] in result.output  # boto3's reason names the endpoint


@pytest.fixture
def gcs_emulator(monkeypatch):
    """A GCS emulator address where nothing listens (the client then needs no credentials)."""
    pytest.importorskip("google.cloud.storage")
    host = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
    return host


def test_gs_is_optunas_gcs_store_on_the_bucket(gcs_emulator):
    from optuna.artifacts import GCSArtifactStore

    store = open_artifact_store(ArtifactLocation("gs", bucket="team-figures", prefix="a/b"))
    assert isinstance(store, PrefixedStore) and store.prefix == "a/b"
    assert isinstance(store.store, GCSArtifactStore)
    assert store.store.bucket_name == "team-figures"


def test_a_gcs_bucket_that_does_not_answer_is_one_line_and_no_study(tmp_path, gcs_emulator):
    result = invoke("search", str(config_with(tmp_path, "gs://team-figures/figs")))
    assert_one_line_and_no_study(
        result, tmp_path, "cannot reach the artifact store gs://team-figures/figs ([study] "
    )
