"""A study's artifact store: where the trial figures and the report go, opened from
``[study] artifacts`` (:class:`autofreeze.config.ArtifactLocation`).

Optuna keeps an artifact's metadata in the study's storage (so it travels through a database or
the gRPC proxy like everything else) and its bytes in an artifact store, which every worker and
the dashboard must reach themselves. Optuna ships three, and each is a ``[study] artifacts``
value here:

- a folder, ``FileSystemArtifactStore``: on a cluster, a shared file system mounted at the
  same path on every machine (``AUTOFREEZE_ARTIFACTS`` names it where the config's path is not
  the mount's);
- ``s3://BUCKET[/PREFIX]``, ``Boto3ArtifactStore`` (boto3: ``autofreeze[s3]``; credentials,
  region and ``AWS_ENDPOINT_URL`` for an S3-compatible server as boto3 reads them);
- ``gs://BUCKET[/PREFIX]``, ``GCSArtifactStore`` (google-cloud-storage: ``autofreeze[gcs]``;
  credentials as Google's client library finds them).

Optuna's bucket stores use the artifact id as the whole key; :class:`PrefixedStore` puts the
prefix in front. A bucket store is checked once before a search or a worker touches the study
(:func:`check_artifact_store`): a missing client library or an unreachable bucket is one line,
not a note at every trial. A folder is not: one that cannot be written is said once while the
trials go on without figures (:class:`autofreeze.review.dashboard.Publisher`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import IO, Any

from autofreeze.config import ARTIFACT_SCHEMES, ArtifactLocation
from autofreeze.errors import StorageError

# a bucket that does not answer within this is unreachable (boto3's own default is 60 s)
CONNECT_TIMEOUT = 10
INSTALL = "pip install 'autofreeze[{extra}]'"
_CLIENT_MODULE = {"s3": "boto3", "gs": "google.cloud.storage"}


class PrefixedStore:
    """An artifact store whose keys start with ``prefix/`` (Optuna's protocol: ``open_reader``,
    ``write``, ``remove`` by artifact id)."""

    def __init__(self, store: Any, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}"

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        return self.store.open_reader(self.key(artifact_id))

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        self.store.write(self.key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self.key(artifact_id))


class FirstOf:
    """Several artifact stores read as one: the dashboard of a storage whose studies keep their
    figures in different places (each ``[study] artifacts``). An artifact is read from the
    first store that holds it; one written (an upload in the dashboard) goes to the first."""

    def __init__(self, stores: list[Any]) -> None:
        self.stores = stores

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        from optuna.artifacts.exceptions import ArtifactNotFound

        for store in self.stores[:-1]:
            try:
                return store.open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        return self.stores[-1].open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        self.stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        for store in self.stores:
            try:
                store.remove(artifact_id)
            except ArtifactNotFound:
                continue


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store raises when it cannot be reached or written: ``OSError``, and the client
    libraries' own errors where they are installed (botocore, google-api-core, google-auth)."""
    errors: list[type[BaseException]] = [OSError, StorageError]
    for module, names in (
        ("botocore.exceptions", ("BotoCoreError", "ClientError")),
        ("google.api_core.exceptions", ("GoogleAPIError",)),
        ("google.auth.exceptions", ("GoogleAuthError",)),
    ):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        errors += [getattr(found, n) for n in names]
    return tuple(errors)


def _client_library(where: ArtifactLocation) -> Any:
    """The bucket's client library, or one line naming the extra that installs it."""
    name, package, extra = ARTIFACT_SCHEMES[where.scheme]
    try:
        return importlib.import_module(_CLIENT_MODULE[where.scheme])
    except ImportError:
        raise StorageError(
            f"[study] artifacts {where} is Optuna's {name} artifact store, which needs "
            f"{package}: {INSTALL.format(extra=extra)}"
        ) from None


def _s3_store(where: ArtifactLocation) -> Any:
    boto3 = _client_library(where)
    from botocore.config import Config
    from optuna.artifacts import Boto3ArtifactStore

    config = Config(connect_timeout=CONNECT_TIMEOUT, retries={"max_attempts": 3})
    return Boto3ArtifactStore(where.bucket, client=boto3.client("s3", config=config))


def _gcs_store(where: ArtifactLocation) -> Any:
    storage = _client_library(where)
    import warnings

    import optuna
    from optuna.artifacts import GCSArtifactStore

    with warnings.catch_warnings():  # "experimental" since Optuna 3.4
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return GCSArtifactStore(where.bucket, client=storage.Client())


def open_artifact_store(where: ArtifactLocation, *, create: bool = True) -> Any:
    """The Optuna artifact store at ``where``; a folder is made when ``create``.

    Raises:
        StorageError: a bucket store whose client library is missing, or whose client cannot
            be made (no credentials found, for example).
        OSError: a folder that cannot be made.
    """
    if not where.scheme:
        from optuna.artifacts import FileSystemArtifactStore

        if create:
            Path(where.path).mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(where.path)
    try:
        store = (_s3_store if where.scheme == "s3" else _gcs_store)(where)
    except StorageError:
        raise
    except store_errors() as exc:  # no credentials, a bad region, ...
        raise StorageError(f"cannot open the artifact store {where}: {_reason(exc)}") from None
    return PrefixedStore(store, where.prefix) if where.prefix else store


def check_artifact_store(where: ArtifactLocation) -> None:
    """Fail with one line unless the bucket store at ``where`` answers (a folder passes: one
    that cannot be written is a note, and the trials go on)."""
    if not where.scheme:
        return
    store = open_artifact_store(where)
    inner = store.store if isinstance(store, PrefixedStore) else store
    try:
        if where.scheme == "s3":
            inner.client.head_bucket(Bucket=where.bucket)
        else:
            # one try: the client's default retries a refused connection for 120 s
            inner.client.get_bucket(where.bucket, timeout=CONNECT_TIMEOUT, retry=None)
    except store_errors() as exc:
        raise StorageError(
            f"cannot reach the artifact store {where} ([study] artifacts): {_reason(exc)}"
        ) from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]
