"""Settings for every Noctis process, read from the environment (``NOCTIS_`` prefix).

Settings are built in ``main()`` / ``create_app()``, never at import time, so tests and
processes each build their own.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from noctis.specs.common import CodeRef

# Where no webhook call goes unless NOCTIS_WEBHOOK_BLOCKED_NETWORKS says otherwise: this host,
# link-local (169.254.169.254 is the metadata endpoint of AWS, GCP and Azure; fd00:ec2::254
# AWS's over IPv6), unspecified and multicast addresses.
MIN_INDEX_SECRETS_KEY_CHARACTERS = 32


def index_secrets_keys(configured: str) -> list[str]:
    """The keys of NOCTIS_INDEX_SECRETS_KEY (or of an embedded key file), first to last;
    ValueError if one is too short to be a key."""
    keys = [key.strip() for key in configured.split(",") if key.strip()]
    for key in keys:
        if len(key) < MIN_INDEX_SECRETS_KEY_CHARACTERS:
            raise ValueError(
                f"each key needs {MIN_INDEX_SECRETS_KEY_CHARACTERS} characters or more "
                f"(one has {len(key)}); e.g. `openssl rand -base64 32`"
            )
    return keys


WEBHOOK_BLOCKED_BY_DEFAULT = (
    "127.0.0.0/8",
    "::1/128",
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "0.0.0.0/8",
    "::/128",
    "224.0.0.0/4",
    "ff00::/8",
)


class DuplicatePolicy(StrEnum):
    """What happens when a SOP Instance UID already stored arrives again with a different data
    set (the File Meta the sender wrote is not compared).

    The same data set sent again is always a no-op success.
    """

    # Keep what was accepted first and answer Success, as Orthanc and dcm4chee do: a failure
    # makes a modality queue and retry for ever, and a re-send in another transfer syntax is
    # the same instance. The discarded copy is audited and counted.
    KEEP_FIRST = "keep-first"
    REJECT = "reject"  # keep what was accepted first; the sender gets a failure status
    REPLACE = "replace"  # store the new bytes, then remove the old object


class WorkerRole(StrEnum):
    """Which queues a worker follows (issue 14, `scaling`): transfers to slow destinations
    run on their own workers so they never hold up a facility's derived work."""

    ALL = "all"  # the default queue, every facility's and every destination's
    PIPELINE = "pipeline"  # the default queue and every facility's
    TRANSFERS = "transfers"  # every destination's (registered AEs with a host and port)


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "noctis"


class PoolSettings(BaseModel):
    """One extra storage pool a facility may name (`storagePool`): a directory, or an S3
    bucket. Each field is also an environment variable of its own, e.g.
    ``NOCTIS_STORAGE_POOLS__<pool>__BUCKET`` (credentials from the pool's Secret that way)."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="a directory: the filesystem backend")
    endpoint: str | None = Field(None, description="host[:port] of an S3 server")
    bucket: str = ""
    secure: bool = True
    region: str | None = None
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _one_backend(self) -> PoolSettings:
        if (self.path is None) == (self.endpoint is None):
            raise ValueError("a storage pool needs a path or an S3 endpoint (one of them)")
        if self.endpoint is not None and not self.bucket:
            raise ValueError("an S3 storage pool needs a bucket")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOCTIS_", env_nested_delimiter="__", extra="ignore"
    )

    mode: Literal["embedded", "production"] = Field(
        "embedded",
        description="embedded: SQLite + filesystem + in-process tasks, with a loopback-only "
        "default facility; production: everything from explicit settings, nothing implicit.",
    )
    data_dir: Path = Field(default_factory=default_data_dir)

    # Index
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; defaults to a SQLite file under data_dir"
    )

    # Object store
    storage_backend: Literal["filesystem", "s3"] = "filesystem"
    storage_path: Path | None = Field(
        None, description="filesystem backend root (default data_dir/objects)"
    )
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "noctis"
    s3_secure: bool = True
    s3_region: str | None = None

    # Quotas and per-facility storage pools (issue 14, part "quota"): noctis.core.quota,
    # noctis.storage.pools.
    quota_refresh_seconds: float = Field(
        5.0,
        ge=0,
        description="how often each process reads a facility's usage again to check its quota "
        "(between reads it counts its own stores; others' are the in-flight excess)",
    )
    storage_pool: str | None = Field(
        None,
        description="the StoragePool name of the default object store (the Archive's): a "
        "facility naming it stores there",
    )
    storage_pools: dict[str, PoolSettings] = Field(
        default_factory=dict,
        description="other storage pools facilities may name, by name: a directory or an S3 "
        "bucket each",
    )

    # DIMSE SCP
    ae_title: str = "NOCTIS"
    scp_host: str = "0.0.0.0"
    scp_port: int = 11112
    scp_processes: int = Field(
        1, ge=1, description="SCP processes accepting from one listening socket on the port"
    )
    scp_fast_path: bool = Field(
        True,
        description="serve DIMSE through the fast path (noctis.scp.fast: event-driven reactor, "
        "C-STORE received straight to the spool, C-FIND responses in batches); false: plain "
        "pynetdicom handlers, e.g. while a pynetdicom upgrade is checked",
    )
    max_associations: int = 32
    association_request_timeout: float = Field(
        5.0,
        gt=0,
        description="seconds a new connection may take to send its A-ASSOCIATE-RQ (and, with "
        "DICOM TLS, to finish its handshake) before it is closed",
    )
    max_connections_per_address: int = Field(
        16,
        ge=0,
        description="connections one peer address may hold open at once, associated or not "
        "(0: no cap); behind a NAT or a Service that hides client addresses, raise it",
    )
    max_pdu_size: int = 0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    spool_dir: Path | None = Field(None, description="where large incoming instances are spooled")
    health_host: str = "0.0.0.0"
    health_port: int = 8081
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    max_inflated_mb: int = Field(
        512,
        ge=1,
        description="a deflated data set (transfer syntax 1.2.840.10008.1.2.1.99) inflating to "
        "more than this many MiB is refused at ingest, over DIMSE and STOW alike; reads of a "
        "stored one stop there too",
    )
    scp_facilities: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="facilities whose AEs may call this SCP (comma-separated); empty: any",
    )
    scp_drain_seconds: float = Field(
        25.0, ge=0, description="on SIGTERM, how long open associations may take to finish"
    )
    tls_cert_file: Path | None = Field(None, description="DICOM TLS: server certificate (PEM)")
    tls_key_file: Path | None = Field(None, description="DICOM TLS: its private key (PEM)")
    tls_ca_file: Path | None = Field(
        None, description="DICOM TLS: CA bundle; when set, callers must present a certificate"
    )

    # Storage commitment (issue 14, part `commitment`): reporting on a new association
    commitment_report_attempts: int = Field(
        6,
        ge=1,
        description="storage commitment: how many times the SCP tries to open an association "
        "to a requester that released before its result was ready",
    )
    commitment_report_backoff_seconds: float = Field(
        2.0,
        gt=0,
        description="storage commitment: wait before the second attempt, doubled after each "
        "(2, 4, 8, 16, 32 s: about a minute in all by default)",
    )

    # Tasks
    broker_url: str | None = Field(None, description="Celery broker; in-process tasks when unset")
    worker_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="task queues `noctis worker` consumes (comma-separated); default: the "
        "default queue and every enabled facility's queue",
    )
    worker_concurrency: int = Field(2, ge=1, description="tasks a worker runs at once")
    # Workers at scale (issue 14, `scaling`): which followed queues a worker consumes when
    # NOCTIS_WORKER_QUEUES is unset. The operator runs transfers on a Deployment of their own.
    worker_role: WorkerRole = Field(
        WorkerRole.ALL,
        description="all: the default queue, every facility's and every destination's; "
        "pipeline: the default queue and the facilities'; transfers: the destinations' only",
    )

    # Routing (issue 14: forwarding to other AEs; noctis.core.routing)
    route_scan_seconds: float = Field(
        1.0,
        gt=0,
        description="how often a worker looks for new instances of per-instance routes, "
        "transfers due again and transfers whose worker died",
    )
    route_claim_seconds: float = Field(
        120.0,
        gt=0,
        description="a claimed transfer not finished within this time is taken back and "
        "sent again (its worker is presumed dead); renewed while a batch is being sent",
    )
    route_batch: int = Field(50, ge=1, description="transfers one association sends at most")
    route_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="how long routing waits to connect to a destination and for each answer "
        "(association, C-STORE response)",
    )
    route_calling_ae: str = Field(
        "NOCTIS", min_length=1, max_length=16, description="the AE title routing sends as"
    )

    # Web
    api_host: str = "0.0.0.0"
    api_port: int = 8080
    frame_cache_mb: int = Field(
        128,
        ge=0,
        description="frames kept in each API process's memory, in MB (0: none); objects never "
        "change under their key, so a cached frame is never stale",
    )
    frames_per_request: int = Field(
        1000,
        ge=1,
        description="distinct frames one WADO-RS frames request may ask for (duplicates in "
        "the frame list count once); more is answered 400",
    )
    frame_mb_per_request: int = Field(
        1024,
        ge=1,
        description="MB of frames one WADO-RS frames request may ask for; more is answered "
        "413 (large answers are streamed, so this bounds work, not memory)",
    )
    secret_key: SecretStr = SecretStr("")
    viewer_dir: Path | None = None
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="reverse proxies (addresses or CIDRs, comma-separated) whose "
        "X-Forwarded-For/-Proto are believed; empty: none, the peer is the client",
    )

    # Deletion, legal hold and the consistency sweep (issue 14, part `delete`)
    deletion_sweep_seconds: float = Field(
        60.0, gt=0, description="seconds between periodic sweeps of deleted studies' objects"
    )
    deletion_sweep_lease_seconds: float = Field(
        300.0,
        gt=0,
        description="how long a sweeper holds the objects it removes; a sweeper killed "
        "mid-way leaves them to the next sweep after this",
    )
    consistency_check_seconds: float = Field(
        3600.0, gt=0, description="seconds between consistency checks (objects vs index)"
    )
    retention_check_seconds: float = Field(
        3600.0, gt=0, description="seconds between runs of the facilities' retention"
    )
    orphan_grace_seconds: float = Field(
        3600.0,
        gt=0,
        description="an object no index row references is removed only once older than "
        "this (an instance being stored is never touched)",
    )

    # Study-stable detection and derivatives (issue 14, part `stable`: noctis.worker.stable)
    stable_after_seconds: float = Field(
        60.0,
        gt=0,
        description="a study with no new instance for this long becomes stable (a Facility's "
        "stableAfterSeconds overrides it)",
    )
    stable_sweep_seconds: float = Field(
        10.0, gt=0, description="how often each worker looks for studies that became stable"
    )
    stable_sweep_batch: int = Field(
        500,
        ge=1,
        le=10_000,
        description="studies declared stable per sweep, at most (the rest next time)",
    )
    stable_retry_seconds: float = Field(
        900.0,
        gt=0,
        description="a stable study whose derivatives and routing have not finished this long "
        "after it was declared is sent again",
    )

    # Notifications (issue 15, part `notify`: noctis.core.notify_fanout, noctis.worker.notify)
    notify_tick_seconds: float = Field(
        1.0,
        gt=0,
        description="how often a worker fans new notification events out and sends "
        "the webhook calls and e-mails that are due",
    )
    notify_attempts: int = Field(
        8, ge=1, description="a webhook call or e-mail is tried this many times, then dead"
    )
    notify_backoff_seconds: float = Field(
        5.0, gt=0, description="wait after a first failed delivery, doubled after each failure"
    )
    notify_backoff_max_seconds: float = Field(
        900.0, gt=0, description="the longest wait between two attempts of a delivery"
    )
    notify_claim_seconds: float = Field(
        120.0,
        gt=0,
        description="a delivery a worker claimed and did not finish in this time is "
        "taken back and tried again (its worker is presumed dead)",
    )
    notify_timeout_seconds: float = Field(
        10.0, gt=0, description="how long one webhook call or SMTP exchange may take"
    )
    notify_keep_days: float = Field(
        90.0,
        gt=0,
        description="notification events (with the in-app notifications and deliveries they "
        "made) are forgotten this many days after they were raised, once delivered or dead",
    )
    notify_prune_seconds: float = Field(
        3600.0, gt=0, description="how often a worker forgets the notifications past their days"
    )
    webhook_secrets: dict[str, dict[str, SecretStr]] = Field(
        default_factory=dict,
        description="HMAC secrets of the Facility resources' webhooks, by facility then webhook "
        "name: NOCTIS_WEBHOOK_SECRETS__<facility>__<webhook> (the operator sets them from each "
        "webhook's secretRef)",
    )
    index_secrets_key: SecretStr = Field(
        SecretStr(""),
        description="key (32 characters or more; several, comma-separated, to rotate: the "
        "first seals) sealing the secrets the index keeps, i.e. webhook secrets set through "
        "REST; unset: embedded generates one into <data dir>/index-secrets.key, production "
        "refuses such secrets",
    )
    webhook_blocked_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(WEBHOOK_BLOCKED_BY_DEFAULT),
        description="networks (CIDRs, comma-separated) webhook calls never go to, however "
        "their URL names them: by default loopback, link-local (the cloud's metadata "
        "endpoint), unspecified and multicast addresses; empty: anywhere",
    )
    smtp_host: str | None = Field(None, description="SMTP server for e-mail; unset: no e-mail")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (port 587), tls (implicit TLS, port 465) or none"
    )
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = Field("noctis@localhost", description="the From address of e-mails")
    smtp_ca_file: Path | None = Field(
        None,
        description="CA bundle (PEM) the SMTP server's certificate is checked against; unset: "
        "the system's",
    )

    # The reading worklist (issue 15, part `worklist`: noctis.core.worklist)
    workflow_scan_seconds: float = Field(
        2.0,
        gt=0,
        description="how often each worker gives newly arrived studies their worklist row",
    )

    # Results of automated analysis (issue 15, part `results`: noctis.core.results)
    results_scan_seconds: float = Field(
        2.0, gt=0, description="how often a worker looks for new SR and SEG instances"
    )
    results_scan_batch: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="instances one scan looks past at most (the rest next time)",
    )
    results_max_header_mb: int = Field(
        16,
        ge=1,
        description="an SR or SEG header larger than this is recorded without a summary "
        "(never read whole)",
    )
    results_critical_codes: Annotated[list[CodeRef], NoDecode] = Field(
        default_factory=list,
        description="codes (SCHEME:VALUE, comma-separated, e.g. SCT:274100004) that make a "
        "result critical in every facility, beside each Facility's criticalFindingCodes",
    )

    # Reports (issue 15: noctis.core.reports)
    report_documents_retry_seconds: float = Field(
        60.0,
        gt=0,
        description="how often a worker stores the PDF and SR of signed report versions whose "
        "storing failed at signing (and how long after signing it first tries)",
    )

    # Orders, Modality Worklist and MPPS (issue 15, part `orders`: noctis.core.orders)
    order_link_seconds: float = Field(
        5.0,
        gt=0,
        description="how often each worker links arrived studies to the open orders they "
        "fulfil (by Study Instance UID or accession number)",
    )

    @field_validator("index_secrets_key", mode="after")
    @classmethod
    def _index_secrets_keys(cls, value: SecretStr) -> SecretStr:
        index_secrets_keys(value.get_secret_value())
        return value

    @field_validator("trusted_proxies", "webhook_blocked_networks", mode="after")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"not an address or CIDR: {network!r}") from None
        return value

    @field_validator(
        "worker_queues",
        "scp_facilities",
        "trusted_proxies",
        "webhook_blocked_networks",
        "results_critical_codes",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _production_needs_explicit_settings(self) -> Settings:
        if self.mode == "production" and not self.database_url:
            raise ValueError("NOCTIS_DATABASE_URL is required in production mode")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("NOCTIS_TLS_CERT_FILE and NOCTIS_TLS_KEY_FILE go together")
        return self

    @property
    def embedded(self) -> bool:
        return self.mode == "embedded"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'index.sqlite3'}"

    def resolved_storage_path(self) -> Path:
        return self.storage_path or self.data_dir / "objects"

    def resolved_spool_dir(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"
