"""S3 object store through the `minio` client: MinIO, SeaweedFS, AWS S3, Ceph RGW.

Every call goes through `_mapped_errors`, so callers see only the store's own exceptions:
`ObjectNotFound` for a missing key, `StorageUnavailable` for anything that says "S3 is down,
misconfigured or refusing", `ValueError` for a bad key or a short stream.

The HTTP client has short connect timeouts and few retries on purpose: minio's defaults
(5 minutes, 5 retries) would make a C-STORE hang long past the modality's own timeout when S3
is down, where a quick failure lets the SCP answer "out of resources" and the sender retry later.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO, Final

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name
from urllib3.exceptions import HTTPError

from noctis.storage.base import ObjectNotFound, StorageUnavailable, StoredObject, check_key
from noctis.storage.incoming import IncomingObject, SpooledIncoming

if TYPE_CHECKING:
    from pathlib import Path

    from noctis.settings import Settings

# Objects bigger than this are sent as multipart uploads of parts this big; each part is
# held in memory while it is sent, so this bounds the memory one put needs.
PART_SIZE: Final = 16 << 20
CONNECT_TIMEOUT: Final = 2.0
READ_TIMEOUT: Final = 20.0
_MISSING_KEY_CODES: Final = frozenset({"NoSuchKey", "NoSuchVersion"})
# Answers to a retention or lock query meaning "nothing locks this".
_NO_LOCK_CODES: Final = frozenset(
    {
        "NoSuchObjectLockConfiguration",
        "ObjectLockConfigurationNotFoundError",
        "InvalidRequest",
        "NoSuchKey",
        "NoSuchVersion",
    }
)
# Seconds a bucket's "no object lock" answer is believed (lock can be enabled on a bucket).
LOCK_CONFIG_TTL: Final = 60.0


class S3Store:
    """One bucket on an S3 endpoint."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        endpoint: str = "",
        region: str | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        """``spool_dir``: where incoming instances too big for memory wait to be sent (None:
        the system's temporary directory)."""
        # A bad bucket name is a configuration error: say so at start-up, not at the first C-STORE.
        check_bucket_name(bucket)
        self.client = client
        self.bucket = bucket
        self.endpoint = endpoint  # for messages only
        self.region = region
        # Made by the processes that receive (the SCP, STOW): a worker never spools.
        self.spool_dir = spool_dir
        self._lock_checked: tuple[float, bool] | None = None  # (when, bucket has object lock)
        self._versioning_checked: tuple[float, bool] | None = None  # (when, bucket keeps versions)

    @classmethod
    def connect(
        cls,
        endpoint: str,
        bucket: str,
        *,
        access_key: str = "",
        secret_key: str = "",
        secure: bool = True,
        region: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        spool_dir: Path | None = None,
    ) -> S3Store:
        """A store for `bucket` at `endpoint` (``host:port``, or a URL whose scheme wins).

        Empty credentials mean anonymous access.
        """
        host, secure = _split_endpoint(endpoint, secure)
        client = Minio(
            host,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            # Without a region minio asks the server for the bucket's location first.
            region=region,
            http_client=_http_client(connect_timeout, read_timeout),
        )
        return cls(client, bucket, endpoint=host, region=region, spool_dir=spool_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        return cls.connect(
            settings.s3_endpoint,
            settings.s3_bucket,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            spool_dir=settings.resolved_spool_dir(),
        )

    def __repr__(self) -> str:
        # Never the credentials: this ends up in logs and tracebacks.
        return f"S3Store({self._where})"

    @property
    def _where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint or 'the endpoint'}"

    def incoming(self) -> IncomingObject:
        """Memory, then an unnamed file: the data is copied to the server anyway."""
        return SpooledIncoming(self, self.spool_dir)

    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        check_key(key)
        if length < 0:
            raise ValueError("length must be non-negative")
        with self._mapped_errors(key):
            self.client.put_object(
                self.bucket, key, _ExactReader(stream, length), length, part_size=PART_SIZE
            )

    def get(self, key: str) -> bytes:
        check_key(key)
        with self._mapped_errors(key):
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object in chunks; like the filesystem store, raises on the first iteration."""
        check_key(key)
        with self._mapped_errors(key):
            response = self.client.get_object(self.bucket, key)
            try:
                yield from response.stream(chunk_size)
            finally:
                response.close()
                response.release_conn()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        check_key(key)
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")
        if length == 0:
            # minio reads length=0 as "to the end"; still say whether the key exists.
            if not self.exists(key):
                raise ObjectNotFound(key)
            return b""
        with self._mapped_errors(key):
            try:
                response = self.client.get_object(self.bucket, key, offset=offset, length=length)
            except S3Error as exc:
                if exc.code == "InvalidRange":  # offset at or past the end
                    return b""
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def delete(self, key: str) -> None:
        check_key(key)
        with self._mapped_errors(key):
            # S3 answers 204 for a missing key too, so this is idempotent as it stands.
            self.client.remove_object(self.bucket, key)

    def purge(self, key: str) -> None:
        """The object; in a versioned bucket, every version of it (and the delete markers)."""
        check_key(key)
        with self._mapped_errors(key):
            if not self._versioned():
                self.client.remove_object(self.bucket, key)
                return
            for item in self.client.list_objects(self.bucket, prefix=key, include_version=True):
                if item.object_name == key:
                    self.client.remove_object(self.bucket, key, version_id=item.version_id)

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        with self._mapped_errors():
            listing = self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            for item in listing:
                if item.object_name is None or item.is_dir:
                    continue
                modified = item.last_modified or datetime.now(UTC)
                yield StoredObject(item.object_name, int(item.size or 0), modified)

    def retained_until(self, key: str) -> datetime | None:
        check_key(key)
        if not self._bucket_locks():
            return None
        try:
            with self._mapped_errors(key):
                retention = self.client.get_object_retention(self.bucket, key)
        except ObjectNotFound:
            return None
        except StorageUnavailable as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code in _NO_LOCK_CODES:
                return None
            raise
        until = retention.retain_until_date if retention is not None else None
        if until is None:
            return None
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
        return until if until > datetime.now(UTC) else None

    def _versioned(self) -> bool:
        """Whether the bucket keeps (or kept: suspended) versions, cached like `_bucket_locks`."""
        now = time.monotonic()
        checked = self._versioning_checked
        if checked is not None and now - checked[0] < LOCK_CONFIG_TTL:
            return checked[1]
        status = self.client.get_bucket_versioning(self.bucket).status
        versioned = status in ("Enabled", "Suspended")
        self._versioning_checked = (now, versioned)
        return versioned

    def _bucket_locks(self) -> bool:
        """Whether the bucket has object lock enabled (cached for LOCK_CONFIG_TTL seconds)."""
        now = time.monotonic()
        if self._lock_checked is not None and now - self._lock_checked[0] < LOCK_CONFIG_TTL:
            return self._lock_checked[1]
        try:
            with self._mapped_errors():
                self.client.get_object_lock_config(self.bucket)
            locks = True
        except StorageUnavailable as exc:
            if not (isinstance(exc.__cause__, S3Error) and exc.__cause__.code in _NO_LOCK_CODES):
                raise
            locks = False
        self._lock_checked = (now, locks)
        return locks

    def exists(self, key: str) -> bool:
        check_key(key)
        try:
            with self._mapped_errors(key):
                self.client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return False
        return True

    def check(self) -> None:
        """Raise StorageUnavailable unless the bucket exists and answers our credentials."""
        with self._mapped_errors():
            found = self.client.bucket_exists(self.bucket)
        if not found:
            raise StorageUnavailable(f"S3 {self._where} does not exist")

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (tests and embedded set-ups; the operator in K8s)."""
        with self._mapped_errors():
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:
                # Another process created it between our two calls: that is what we wanted.
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    @contextlib.contextmanager
    def _mapped_errors(self, key: str | None = None) -> Iterator[None]:
        """Turn minio and urllib3 exceptions into the store's own."""
        try:
            yield
        except S3Error as exc:
            if key is not None and exc.code in _MISSING_KEY_CODES:
                raise ObjectNotFound(key) from exc
            raise StorageUnavailable(
                f"S3 {self._where} refused the request: {exc.code}: {exc.message}"
            ) from exc
        except MinioException as exc:  # 5xx answers and non-XML errors (a proxy's HTML page)
            raise StorageUnavailable(f"S3 {self._where} failed: {exc}") from exc
        except HTTPError as exc:  # connection refused, timeouts, resets, retries exhausted
            raise StorageUnavailable(f"S3 {self._where} is unreachable: {exc}") from exc


class _ExactReader:
    """Reads exactly `length` bytes from a stream; raises ValueError if it ends early.

    minio only notices a short stream after sending what it got, and reports it as a plain
    IOError; failing inside read() makes it abort the upload and keeps the contract of
    FilesystemStore.put (ValueError, no object left behind).
    """

    def __init__(self, stream: BinaryIO, length: int) -> None:
        self._stream = stream
        self._length = length
        self._remaining = length

    def read(self, size: int = -1) -> bytes:
        if self._remaining == 0:
            return b""
        wanted = self._remaining if size < 0 else min(size, self._remaining)
        data = self._stream.read(wanted)
        if not data:
            raise ValueError(
                f"stream ended after {self._length - self._remaining} of {self._length} bytes"
            )
        self._remaining -= len(data)
        return data


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    for scheme, is_secure in (("https://", True), ("http://", False)):
        if endpoint.startswith(scheme):
            return endpoint.removeprefix(scheme).rstrip("/"), is_secure
    return endpoint.rstrip("/"), secure


def _http_client(connect_timeout: float, read_timeout: float) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        # The override minio itself honours, so a private CA (hospital PKI) works as documented.
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        # One connect retry and two for 5xx answers ride out a blip; more would only delay an
        # error the caller has to handle anyway. No read retries: a hung server would cost
        # read_timeout per attempt (urllib3 already replaces pooled connections the server closed).
        retries=urllib3.Retry(
            total=2,
            connect=1,
            read=0,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
            # Give up with the last answer instead of a MaxRetryError hiding the S3 error code.
            raise_on_status=False,
        ),
    )
