"""Objects of an Archive: shared ConfigMap, API Deployment/Service/PDB, the worker Deployment
(the pipeline: default and facility queues) and the transfer Deployment (destination queues)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from noctis.operator.builders import common
from noctis.specs.archive import DEFAULT_QUEUE, ArchiveSpec, facility_queue
from noctis.specs.kube import SecretKeyRef
from noctis.specs.storagepool import CredentialsRef, StoragePoolSpec

KIND = "Archive"


@dataclass(frozen=True)
class Images:
    """Default images (the operator's settings); a spec's ``image`` overrides them."""

    scp: str
    api: str
    worker: str
    pull_policy: str | None = None


@dataclass(frozen=True)
class ArchiveContext:
    """What every Noctis pod of one Archive shares: index, broker, object store."""

    name: str
    namespace: str
    database: SecretKeyRef
    broker: SecretKeyRef | None
    s3_credentials: CredentialsRef
    config: dict[str, str]  # the shared ConfigMap's data
    pull_policy: str | None
    # The other StoragePools the Facilities of the Archive name: their credentials Secrets
    # (endpoint and bucket are in `config`), by pool name.
    pool_credentials: dict[str, CredentialsRef] = field(default_factory=dict)
    # The HMAC secrets of the Facilities' webhooks (notifications), by (facility, webhook):
    # the workers that deliver them read NOCTIS_WEBHOOK_SECRETS__<facility>__<webhook>.
    webhook_secrets: dict[tuple[str, str], SecretKeyRef] = field(default_factory=dict)
    # The key sealing the secrets the index keeps (NOCTIS_INDEX_SECRETS_KEY).
    index_secrets_key: SecretKeyRef | None = None

    @property
    def config_map(self) -> str:
        return config_map_name(self.name)

    def secret_env(self) -> list[dict[str, Any]]:
        env = [
            common.secret_env("NOCTIS_DATABASE_URL", self.database.name, self.database.key),
            common.secret_env(
                "NOCTIS_S3_ACCESS_KEY",
                self.s3_credentials.secret_name,
                self.s3_credentials.access_key_key,
            ),
            common.secret_env(
                "NOCTIS_S3_SECRET_KEY",
                self.s3_credentials.secret_name,
                self.s3_credentials.secret_key_key,
            ),
        ]
        if self.broker is not None:
            env.append(common.secret_env("NOCTIS_BROKER_URL", self.broker.name, self.broker.key))
        for pool, credentials in sorted(self.pool_credentials.items()):
            prefix = pool_env_prefix(pool)
            env.append(
                common.secret_env(
                    f"{prefix}ACCESS_KEY", credentials.secret_name, credentials.access_key_key
                )
            )
            env.append(
                common.secret_env(
                    f"{prefix}SECRET_KEY", credentials.secret_name, credentials.secret_key_key
                )
            )
        return env

    def index_secrets_env(self) -> list[dict[str, Any]]:
        """The key sealing the index's secrets: for the API and worker pods, which seal and
        open them (never the SCP pods, which face the modalities and need none)."""
        if self.index_secrets_key is None:
            return []
        key = self.index_secrets_key
        return [common.secret_env("NOCTIS_INDEX_SECRETS_KEY", key.name, key.key)]


def webhook_secret_env(ctx: ArchiveContext) -> list[dict[str, Any]]:
    """The webhook secrets, from their Secrets, for the workers (never in the ConfigMap)."""
    return [
        common.secret_env(webhook_secret_variable(facility, webhook), ref.name, ref.key)
        for (facility, webhook), ref in sorted(ctx.webhook_secrets.items())
    ]


def webhook_secret_variable(facility: str, webhook: str) -> str:
    """noctis.settings.Settings.webhook_secrets[facility][webhook] as a variable."""
    return f"NOCTIS_WEBHOOK_SECRETS__{facility}__{webhook}"


def pool_env_prefix(pool: str) -> str:
    """Settings of storage pool ``pool`` (noctis.settings.PoolSettings) as variables."""
    return f"NOCTIS_STORAGE_POOLS__{pool}__"


def config_map_name(archive: str) -> str:
    return f"{archive}-config"


def api_name(archive: str) -> str:
    return f"{archive}-api"


def worker_name(archive: str) -> str:
    return f"{archive}-worker"


def transfer_name(archive: str) -> str:
    return f"{archive}-transfer"


def archive_context(
    name: str,
    namespace: str,
    spec: ArchiveSpec,
    pool: StoragePoolSpec,
    other_pools: Mapping[str, StoragePoolSpec] | None = None,
    webhook_secrets: Mapping[tuple[str, str], SecretKeyRef] | None = None,
) -> ArchiveContext:
    """``other_pools``: the StoragePools (by name) that Facilities of the Archive name besides
    its own: every pod gets each one's endpoint and bucket, and its credentials from its
    Secret (never in the ConfigMap, the index or a log)."""
    config = {
        "NOCTIS_MODE": "production",
        "NOCTIS_DATA_DIR": common.DATA_DIR,
        "NOCTIS_STORAGE_BACKEND": "s3",
        "NOCTIS_S3_ENDPOINT": pool.host,
        "NOCTIS_S3_BUCKET": pool.bucket,
        "NOCTIS_S3_SECURE": "true" if pool.secure else "false",
        "NOCTIS_DUPLICATE_POLICY": spec.duplicate_policy.value,
    }
    if pool.region:
        config["NOCTIS_S3_REGION"] = pool.region
    config["NOCTIS_STORAGE_POOL"] = spec.storage_pool
    others = {n: p for n, p in (other_pools or {}).items() if n != spec.storage_pool}
    for pool_name, other in sorted(others.items()):
        prefix = pool_env_prefix(pool_name)
        config[f"{prefix}ENDPOINT"] = other.host
        config[f"{prefix}BUCKET"] = other.bucket
        config[f"{prefix}SECURE"] = "true" if other.secure else "false"
        if other.region:
            config[f"{prefix}REGION"] = other.region
    return ArchiveContext(
        name=name,
        namespace=namespace,
        database=spec.database,
        broker=spec.broker,
        s3_credentials=pool.credentials,
        config=config,
        pull_policy=spec.image_pull_policy.value if spec.image_pull_policy else None,
        pool_credentials={n: p.credentials for n, p in others.items()},
        webhook_secrets=dict(webhook_secrets or {}),
        index_secrets_key=spec.index_secrets_key,
    )


def task_queues(facilities: list[str]) -> list[str]:
    return [DEFAULT_QUEUE, *(facility_queue(f) for f in sorted(set(facilities)))]


def build_config_map(ctx: ArchiveContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": common.metadata(
            ctx.config_map, ctx.namespace, common.labels("config", ctx.name, KIND)
        ),
        "data": dict(ctx.config),
    }


def _container(
    name: str,
    image: str,
    pull_policy: str | None,
    command: list[str],
    ports: list[dict[str, Any]],
    env: list[dict[str, Any]],
    ctx: ArchiveContext,
    probe_port: str,
    resources: dict[str, Any],
) -> dict[str, Any]:
    _, mounts = common.scratch_volumes()
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "ports": ports,
        "envFrom": [{"configMapRef": {"name": ctx.config_map}}],
        "env": ctx.secret_env() + ctx.index_secrets_env() + env,
        "startupProbe": common.http_probe("/healthz", probe_port, period=2, failures=60),
        "livenessProbe": common.http_probe("/healthz", probe_port, period=10, failures=3),
        "readinessProbe": common.http_probe("/readyz", probe_port, period=5, failures=2),
        "resources": resources,
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
    }
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    return container


def _deployment(
    name: str,
    component: str,
    ctx: ArchiveContext,
    replicas: int,
    container: dict[str, Any],
    grace: int,
) -> dict[str, Any]:
    selector = common.selector_labels(component, ctx.name)
    obj_labels = common.labels(component, ctx.name, KIND)
    volumes, _ = common.scratch_volumes()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(name, ctx.namespace, obj_labels),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": obj_labels,
                    "annotations": {common.CONFIG_HASH: common.config_hash(ctx.config, container)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": grace,
                    "securityContext": common.pod_security_context(),
                    "topologySpreadConstraints": common.spread(selector),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def build_api_deployment(ctx: ArchiveContext, spec: ArchiveSpec, images: Images) -> dict[str, Any]:
    env = [{"name": "NOCTIS_API_PORT", "value": str(spec.api.port)}]
    if spec.api.secret_key is not None:
        key = spec.api.secret_key
        env.append(common.secret_env("NOCTIS_SECRET_KEY", key.name, key.key))
    if spec.api.admin_password is not None:
        ref = spec.api.admin_password
        env.append(common.secret_env("NOCTIS_ADMIN_PASSWORD", ref.name, ref.key))
    if spec.api.trusted_proxies:
        env.append({"name": "NOCTIS_TRUSTED_PROXIES", "value": ",".join(spec.api.trusted_proxies)})
    container = _container(
        "api",
        spec.api.image or images.api,
        ctx.pull_policy or images.pull_policy,
        ["noctis", "api"],
        [{"name": "http", "containerPort": spec.api.port, "protocol": "TCP"}],
        env,
        ctx,
        "http",
        spec.api.resources.as_dict(),
    )
    return _deployment(api_name(ctx.name), "api", ctx, spec.api.replicas, container, grace=30)


def build_api_service(ctx: ArchiveContext, spec: ArchiveSpec) -> dict[str, Any]:
    port: dict[str, Any] = {
        "name": "http",
        "port": spec.api.service.port,
        "targetPort": "http",
        "protocol": "TCP",
    }
    if spec.api.service.node_port is not None:
        port["nodePort"] = spec.api.service.node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(
            api_name(ctx.name),
            ctx.namespace,
            common.labels("api", ctx.name, KIND),
            spec.api.service.annotations,
        ),
        "spec": {
            "type": spec.api.service.type.value,
            "selector": common.selector_labels("api", ctx.name),
            "ports": [port],
        },
    }


def build_api_pdb(ctx: ArchiveContext) -> dict[str, Any]:
    return common.pdb(
        api_name(ctx.name),
        ctx.namespace,
        common.labels("api", ctx.name, KIND),
        common.selector_labels("api", ctx.name),
    )


def build_worker_deployment(
    ctx: ArchiveContext, spec: ArchiveSpec, images: Images, facilities: list[str]
) -> dict[str, Any]:
    env = [
        {"name": "NOCTIS_HEALTH_PORT", "value": str(spec.worker.health_port)},
        {"name": "NOCTIS_WORKER_CONCURRENCY", "value": str(spec.worker.concurrency)},
        {"name": "NOCTIS_WORKER_QUEUES", "value": ",".join(task_queues(facilities))},
        *webhook_secret_env(ctx),  # every worker runs the notifications job
    ]
    container = _container(
        "worker",
        spec.worker.image or images.worker,
        ctx.pull_policy or images.pull_policy,
        ["noctis", "worker"],
        [{"name": "health", "containerPort": spec.worker.health_port, "protocol": "TCP"}],
        env,
        ctx,
        "health",
        spec.worker.resources.as_dict(),
    )
    # A worker finishes the task in hand (a series' metadata bundle) before it stops.
    deployment = _deployment(
        worker_name(ctx.name), "worker", ctx, spec.worker.replicas, container, grace=120
    )
    return _scaled_by_operator(deployment) if spec.worker.autoscale else deployment


def build_transfer_deployment(
    ctx: ArchiveContext, spec: ArchiveSpec, images: Images
) -> dict[str, Any]:
    """Workers that only send to routing destinations: they follow every registered
    destination's queue from the index, so a new destination needs no rollout, and a slow one
    holds up transfers, never a facility's derived work (that runs on the worker Deployment)."""
    transfers = spec.transfers
    env = [
        {"name": "NOCTIS_HEALTH_PORT", "value": str(transfers.health_port)},
        {"name": "NOCTIS_WORKER_CONCURRENCY", "value": str(transfers.concurrency)},
        {"name": "NOCTIS_WORKER_ROLE", "value": "transfers"},
        *webhook_secret_env(ctx),
    ]
    container = _container(
        "transfer",
        transfers.image or spec.worker.image or images.worker,
        ctx.pull_policy or images.pull_policy,
        ["noctis", "worker"],
        [{"name": "health", "containerPort": transfers.health_port, "protocol": "TCP"}],
        env,
        ctx,
        "health",
        transfers.resources.as_dict(),
    )
    # An association in flight is finished (or times out) before the pod stops.
    deployment = _deployment(
        transfer_name(ctx.name), "transfer", ctx, transfers.replicas, container, grace=120
    )
    return _scaled_by_operator(deployment) if transfers.autoscale else deployment


def _scaled_by_operator(deployment: dict[str, Any]) -> dict[str, Any]:
    """Replicas left out of what we apply: the operator's scaler sets them through the scale
    subresource (``noctis.operator.scaling``), starting from ``initial_replicas``."""
    del deployment["spec"]["replicas"]
    return deployment


def initial_replicas(archive: str, spec: ArchiveSpec) -> dict[str, int]:
    """Deployment name -> its replicas when created, for the autoscaled ones: the minimum."""
    initial = {}
    if spec.worker.autoscale:
        initial[worker_name(archive)] = spec.worker.autoscale.min_replicas
    if spec.transfers.autoscale:
        initial[transfer_name(archive)] = spec.transfers.autoscale.min_replicas
    return initial


def build_all(
    ctx: ArchiveContext, spec: ArchiveSpec, images: Images, facilities: list[str]
) -> list[dict[str, Any]]:
    return [
        build_config_map(ctx),
        build_api_deployment(ctx, spec, images),
        build_api_service(ctx, spec),
        build_api_pdb(ctx),
        build_worker_deployment(ctx, spec, images, facilities),
        build_transfer_deployment(ctx, spec, images),
    ]
