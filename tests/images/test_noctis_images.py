"""The four Noctis images, as a platform team gets them: each runs as a non-root user, says its
version, and its process does its job against real PostgreSQL, S3, Redis and Kubernetes."""

from __future__ import annotations

import io
import secrets
import shutil
import urllib.request
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
import yaml
from pydicom import dcmread
from pydicom.data import get_testdata_file
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from noctis.core.facilities import apply_facility
from noctis.index.migrate import current_revision, upgrade
from noctis.index.models import Facility
from noctis.scp.client import echo, store_files
from noctis.specs.facility import FacilitySpec
from noctis.storage.s3 import S3Store
from support.containers import (
    NOCTIS_COMPONENTS,
    REPO_ROOT,
    BuiltImages,
    image_user,
    podman,
    running,
    wait_for,
)
from support.kube import ControlPlane, fresh_namespace, kubeconfig_yaml
from support.ports import free_ports
from support.redis import RedisServer
from support.s3 import SeaweedFS

pytestmark = pytest.mark.images

NOCTIS_UID = 10001
LOOPBACK = "127.0.0.1"


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def s3_env(s3_server: SeaweedFS, store: S3Store) -> dict[str, str]:
    return {
        "NOCTIS_STORAGE_BACKEND": "s3",
        "NOCTIS_S3_ENDPOINT": s3_server.endpoint,
        "NOCTIS_S3_ACCESS_KEY": s3_server.access_key,
        "NOCTIS_S3_SECRET_KEY": s3_server.secret_key,
        "NOCTIS_S3_BUCKET": store.bucket,
        "NOCTIS_S3_SECURE": "false",
    }


@pytest.mark.parametrize("component", NOCTIS_COMPONENTS)
def test_image_runs_as_non_root_and_says_its_version(images: BuiltImages, component: str) -> None:
    ref = images.noctis(component)
    assert image_user(ref) == f"{NOCTIS_UID}:{NOCTIS_UID}"
    said = podman("run", "--rm", ref, "--version").stdout.strip()
    assert said == f"noctis {version('noctis')}"
    uid = podman("run", "--rm", "--entrypoint", "id", ref, "-u").stdout.strip()
    assert uid == str(NOCTIS_UID)


def test_operator_image_migrates_the_index_and_reconciles_a_facility(
    images: BuiltImages, kube_crds: ControlPlane, pg_url: str, tmp_path: Path
) -> None:
    operator = images.noctis("operator")
    migrated = podman(
        "run", "--rm", "--network", "host",
        "--env", "NOCTIS_MODE=production", "--env", f"NOCTIS_DATABASE_URL={pg_url}",
        operator, "migrate", "--wait", "30",
    )  # fmt: skip
    assert "index schema is up to date" in migrated.stderr
    assert current_revision(pg_url) is not None

    kube = kube_crds
    with fresh_namespace(kube, "img") as namespace:
        release = namespace  # cluster-scoped objects of its own, removed afterwards
        try:
            rendered = kube.helm(
                "template", release, str(REPO_ROOT / "charts" / "noctis"), "--namespace", namespace
            ).stdout
            kube.kubectl("apply", "--namespace", namespace, "-f", "-", input=rendered)
            token = kube.create_token(namespace, f"{release}-noctis-operator")
            # The container's user reads the CA and kubeconfig: copies it may read.
            config_dir = tmp_path / "kube"
            config_dir.mkdir(mode=0o755)
            shutil.copy(kube.ca_file, config_dir / "ca.crt")
            (config_dir / "kubeconfig").write_text(
                kubeconfig_yaml(kube.api_url, Path("/kube/ca.crt"), token, "operator")
            )
            for path in config_dir.iterdir():
                path.chmod(0o644)
            liveness, metrics = free_ports(2)
            env = {
                "KUBECONFIG": "/kube/kubeconfig",
                "NOCTIS_DATABASE_URL": pg_url,
                "NOCTIS_OPERATOR_NAMESPACES": namespace,
                "NOCTIS_OPERATOR_PEERING": "noctis",  # the chart's peering object keeps its name
                "NOCTIS_OPERATOR_LIVENESS_HOST": LOOPBACK,
                "NOCTIS_OPERATOR_LIVENESS_PORT": str(liveness),
                "NOCTIS_OPERATOR_METRICS_HOST": LOOPBACK,
                "NOCTIS_OPERATOR_METRICS_PORT": str(metrics),
            }
            with running(operator, env=env, volumes=[f"{config_dir}:/kube:ro"]) as container:
                wait_for(
                    lambda: http_status(f"http://{LOOPBACK}:{liveness}/healthz") == 200,
                    60,
                    "the operator's liveness endpoint",
                    container,
                )
                assert container.process_uid() == NOCTIS_UID
                facility = {
                    "apiVersion": "pacs.noctis.io/v1alpha1",
                    "kind": "Facility",
                    "metadata": {"name": "imaging", "namespace": namespace},
                    "spec": {
                        "displayName": "Imaging test",
                        "applicationEntities": [
                            {"aeTitle": "IMAGE_TEST", "allowedCIDRs": ["127.0.0.0/8"]}
                        ],
                    },
                }
                kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(facility))
                engine = create_engine(pg_url)
                try:

                    def synced() -> bool:
                        with Session(engine) as session:
                            row = session.scalar(select(Facility).where(Facility.name == "imaging"))
                            return row is not None and [
                                ae.ae_title for ae in row.application_entities
                            ] == ["IMAGE_TEST"]

                    wait_for(synced, 60, "the Facility in the index", container)
                finally:
                    engine.dispose()
                forbidden = [line for line in container.logs().splitlines() if "Forbidden" in line]
                assert not forbidden, forbidden[:5]
        finally:
            kube.kubectl("delete", "clusterrole", f"{release}-noctis-operator", check=False)


def test_scp_image_stores_what_it_acknowledges(
    images: BuiltImages, pg_url: str, s3_server: SeaweedFS, s3_store: S3Store
) -> None:
    upgrade(pg_url)
    engine = create_engine(pg_url)
    with Session(engine) as session, session.begin():
        spec = {"applicationEntities": [{"aeTitle": "IMAGE_TEST", "allowedCIDRs": ["127.0.0.0/8"]}]}
        apply_facility(session, "imaging", FacilitySpec.model_validate(spec))
    engine.dispose()
    dicom_port, health_port = free_ports(2)
    env = {
        "NOCTIS_DATABASE_URL": pg_url,
        **s3_env(s3_server, s3_store),
        "NOCTIS_SCP_HOST": LOOPBACK,
        "NOCTIS_SCP_PORT": str(dicom_port),
        "NOCTIS_HEALTH_HOST": LOOPBACK,
        "NOCTIS_HEALTH_PORT": str(health_port),
    }
    with running(images.noctis("scp"), env=env) as container:
        wait_for(
            lambda: http_status(f"http://{LOOPBACK}:{health_port}/readyz") == 200,
            60,
            "the SCP's /readyz",
            container,
        )
        assert container.process_uid() == NOCTIS_UID
        assert echo(LOOPBACK, dicom_port, calling_ae="IMAGE_TEST") == 0x0000
        ct = Path(get_testdata_file("CT_small.dcm"))
        report = store_files(LOOPBACK, dicom_port, [ct], calling_ae="IMAGE_TEST")
        assert (report.succeeded, report.failed) == (1, 0), report.failures
        stored = [
            o.object_name for o in s3_server.client().list_objects(s3_store.bucket, recursive=True)
        ]
        assert len(stored) == 1
        kept = dcmread(io.BytesIO(s3_store.get(stored[0])))
        sent = dcmread(ct)
        assert kept.SOPInstanceUID == sent.SOPInstanceUID
        assert kept.PixelData == sent.PixelData
        # An AE no facility lists is refused.
        assert echo(LOOPBACK, dicom_port, calling_ae="STRANGER") != 0x0000


def test_api_image_serves_the_viewer_to_its_admin(
    images: BuiltImages, pg_url: str, s3_server: SeaweedFS, s3_store: S3Store
) -> None:
    upgrade(pg_url)
    (port,) = free_ports(1)
    password = secrets.token_urlsafe(16)
    env = {
        "NOCTIS_DATABASE_URL": pg_url,
        **s3_env(s3_server, s3_store),
        "NOCTIS_API_HOST": LOOPBACK,
        "NOCTIS_API_PORT": str(port),
        "NOCTIS_ADMIN_PASSWORD": password,
    }
    base = f"http://{LOOPBACK}:{port}"
    with running(images.noctis("api"), env=env) as container:
        wait_for(lambda: http_status(f"{base}/readyz") == 200, 60, "the API's /readyz", container)
        assert container.process_uid() == NOCTIS_UID
        with httpx.Client(base_url=base, timeout=10) as browser:
            signed_out = browser.get("/", headers={"Accept": "text/html"})
            assert signed_out.status_code in (302, 303, 307)
            assert signed_out.headers["location"].startswith("/login")
            login = browser.post(
                "/login", data={"username": "admin", "password": password, "next": "/"}
            )
            assert login.status_code == 303, login.text[:300]
            page = browser.get("/")
            assert page.status_code == 200
            assert "<title>OHIF Viewer</title>" in page.text
            assert browser.get("/app-config.js").text.count("/dicom-web") >= 1
        assert password not in container.logs()


def test_worker_image_consumes_its_queue(
    images: BuiltImages,
    pg_url: str,
    s3_server: SeaweedFS,
    s3_store: S3Store,
    redis_server: RedisServer,
) -> None:
    upgrade(pg_url)
    (health_port,) = free_ports(1)
    env = {
        "NOCTIS_DATABASE_URL": pg_url,
        **s3_env(s3_server, s3_store),
        "NOCTIS_BROKER_URL": redis_server.url,
        "NOCTIS_HEALTH_HOST": LOOPBACK,
        "NOCTIS_HEALTH_PORT": str(health_port),
    }
    with running(images.noctis("worker"), env=env) as container:
        wait_for(
            lambda: http_status(f"http://{LOOPBACK}:{health_port}/readyz") == 200,
            90,
            "the worker's /readyz",
            container,
        )
        assert container.process_uid() == NOCTIS_UID
        check = container.exec("noctis", "worker", "--check")
        assert check.returncode == 0, check.stdout + check.stderr
