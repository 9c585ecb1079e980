"""The data lake on Azure Blob Storage: containers, paths and blob I/O.

Tasks get a `DataLake` from the Airflow connection `wasb_datalake` (WasbHook);
the CLI and tests build one from a connection string. Underneath it is always
azure-storage-blob, so the same code talks to Azure and to Azurite.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

log = logging.getLogger(__name__)
# The SDK logs every HTTP request and response (headers included) at INFO: one line
# per 4 MiB block floods task logs and costs seconds on large files.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

CONNECTION_ID = "wasb_datalake"

RAW_CONTAINER = "raw"
INTERMEDIATE_CONTAINER = "intermediate"
PREPROCESSED_CONTAINER = "preprocessed"
MODEL_ARTIFACTS_CONTAINER = "modelartifacts"
SERVING_LOGS_CONTAINER = "serving-logs"
"""Captured prediction requests and responses, in the layout KServe's blob logger writes
(`monitoring.capture`; serving.constants.CAPTURE_CONTAINER is the same name)."""
CONTAINERS: tuple[str, ...] = (
    RAW_CONTAINER,
    INTERMEDIATE_CONTAINER,
    PREPROCESSED_CONTAINER,
    MODEL_ARTIFACTS_CONTAINER,
    SERVING_LOGS_CONTAINER,
)

DATASET = "wachttijden"


def dataset_path(day: dt.date | dt.datetime) -> str:
    """`wachttijden/<YYYY>/<MM>/<DD>/wachttijden.csv` for a run's logical date."""
    return f"{DATASET}/{day:%Y}/{day:%m}/{day:%d}/{DATASET}.csv"


_DATASET_DAY = re.compile(rf"(?:^|/){DATASET}/(\d{{4}})/(\d{{2}})/(\d{{2}})/")


def dataset_day(path: str) -> dt.date | None:
    """The export date in a `dataset_path` (any container in front, any file name); None
    for a path that does not carry one."""
    match = _DATASET_DAY.search(path)
    if match is None:
        return None
    try:
        return dt.date(*map(int, match.groups()))
    except ValueError:
        return None


@dataclass(frozen=True)
class BlobRef:
    container: str
    path: str

    def __str__(self) -> str:
        return f"{self.container}/{self.path}"

    @classmethod
    def parse(cls, text: str) -> BlobRef:
        """`container/path/in/container` -> BlobRef; the container must be a known one."""
        container, _, path = text.strip().strip("/").partition("/")
        if container not in CONTAINERS or not path:
            raise ValueError(
                f"blob reference {text!r} must look like '<container>/<path>' with container "
                f"one of {', '.join(CONTAINERS)}"
            )
        return cls(container, path)


class BlobNotFoundError(FileNotFoundError):
    pass


class DataLake:
    def __init__(self, client: BlobServiceClient) -> None:
        self.client = client

    @classmethod
    def from_connection_string(cls, connection_string: str) -> DataLake:
        from azure.storage.blob import BlobServiceClient

        return cls(BlobServiceClient.from_connection_string(connection_string))

    @classmethod
    def from_airflow(cls, conn_id: str = CONNECTION_ID) -> DataLake:
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

        return cls(WasbHook(wasb_conn_id=conn_id).get_conn())

    def ensure_containers(self, names: tuple[str, ...] = CONTAINERS) -> None:
        from azure.core.exceptions import ResourceExistsError

        for name in names:
            try:
                self.client.create_container(name)
                log.info("created container %s", name)
            except ResourceExistsError:
                pass

    def read(self, ref: BlobRef) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.client.get_blob_client(ref.container, ref.path).download_blob().readall()
        except ResourceNotFoundError as exc:
            raise BlobNotFoundError(f"blob {ref} does not exist in the data lake") from exc

    def write(self, ref: BlobRef, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Replace the blob with data (and its metadata), all or nothing.

        A block blob only becomes visible when its block list is committed at
        the end of the upload, so readers see the old content or the new one and
        a failed upload leaves nothing behind: the commit is the atomic rename.
        """
        blob = self.client.get_blob_client(ref.container, ref.path)
        blob.upload_blob(data, overwrite=True, max_concurrency=2, metadata=metadata)
        log.info("wrote %s (%d bytes)", ref, len(data))

    def metadata(self, ref: BlobRef) -> dict[str, str] | None:
        """The blob's metadata, None when the blob does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(self.client.get_blob_client(ref.container, ref.path).get_blob_properties().metadata or {})
        except ResourceNotFoundError:
            return None

    def url(self, ref: BlobRef) -> str:
        """The blob's URL (Azure: https://<account>.blob.core.windows.net/<container>/<path>)."""
        return str(self.client.get_blob_client(ref.container, ref.path).url)

    def exists(self, ref: BlobRef) -> bool:
        return bool(self.client.get_blob_client(ref.container, ref.path).exists())

    def delete(self, ref: BlobRef) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.client.get_blob_client(ref.container, ref.path).delete_blob()
        except ResourceNotFoundError:
            pass

    def list(self, container: str, prefix: str = "") -> list[str]:
        return sorted(b.name for b in self.client.get_container_client(container).list_blobs(
            name_starts_with=prefix or None))

    def list_written(self, container: str, prefix: str = "", since: dt.datetime | None = None,
                     until: dt.datetime | None = None) -> list[str]:
        """Blobs under `prefix` last written in [since, until) (either side open when None); an
        absent container has none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            blobs = self.client.get_container_client(container).list_blobs(name_starts_with=prefix or None)
            return sorted(b.name for b in blobs if (since is None or b.last_modified >= since)
                          and (until is None or b.last_modified < until))
        except ResourceNotFoundError:
            return []
