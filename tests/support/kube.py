"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries come from ``scripts/build-testbed.sh``, cached outside the repo in
``${NOCTIS_TESTBED_CACHE:-$HOME/.cache/noctis-testbed}/<name>-<version>/bin/``; the versions are
read from ``scripts/testbed-versions.env``, the same file the script sources.

There is no scheduler and no kubelet: Pods stay Pending, LoadBalancers get no address and HPAs no
metrics. Everything else a controller writes (Deployments -> ReplicaSets -> Pods, garbage
collection, namespaces, default ServiceAccounts, RBAC) is the real thing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support import log_tail, wait
from support.ports import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "scripts" / "testbed-versions.env"
BUILD_SCRIPT = "scripts/build-testbed.sh"


class TestbedError(RuntimeError):
    """The test bed is missing, or a component of the control plane failed."""

    __test__ = False  # not a pytest test class, despite the name


class CommandError(subprocess.CalledProcessError):
    """A kubectl or helm command failed; the message carries its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


# ---------------------------------------------------------------------------------------------
# Binaries


@dataclass(frozen=True)
class TestbedBinaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    helm: Path

    __test__ = False


def testbed_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the KEY=VALUE lines of scripts/testbed-versions.env."""
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip().strip("\"'")
    return versions


def testbed_cache() -> Path:
    default = Path.home() / ".cache" / "noctis-testbed"
    return Path(os.environ.get("NOCTIS_TESTBED_CACHE") or default)


def testbed_binaries() -> TestbedBinaries:
    """Paths of the built binaries; a clear error naming the build script if any is missing."""
    versions = testbed_versions()
    cache = testbed_cache()
    kube_bin = cache / f"kubernetes-{versions['KUBERNETES_VERSION']}" / "bin"
    binaries = TestbedBinaries(
        etcd=cache / f"etcd-{versions['ETCD_VERSION']}" / "bin" / "etcd",
        kube_apiserver=kube_bin / "kube-apiserver",
        kube_controller_manager=kube_bin / "kube-controller-manager",
        kubectl=kube_bin / "kubectl",
        helm=cache / f"helm-{versions['HELM_VERSION']}" / "bin" / "helm",
    )
    require_built(binaries, "Kubernetes test bed binaries", cache)
    return binaries


def require_built(binaries: object, what: str, cache: Path) -> None:
    """Fail, naming the build script, if any path among ``binaries``' fields is not executable."""
    missing = [str(p) for p in vars(binaries).values() if not os.access(p, os.X_OK)]
    if missing:
        raise TestbedError(
            f"{what} are missing:\n  "
            + "\n  ".join(missing)
            + f"\nBuild them once with `{BUILD_SCRIPT}` (they are cached under {cache})."
        )


# Importing these into a test module must not make pytest collect them as tests.
testbed_versions.__test__ = False  # type: ignore[attr-defined]
testbed_binaries.__test__ = False  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Small helpers


def write_service_account_keys(directory: Path) -> tuple[Path, Path]:
    """A fresh RSA key pair that signs and verifies ServiceAccount tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "sa.key"
    public = directory / "sa.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def kubeconfig_yaml(server: str, ca_file: Path, token: str, user: str) -> str:
    """A kubeconfig with one cluster, one token user and a current context (JSON is valid YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "noctis-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "noctis-test", "user": user}}],
        "current-context": user,
    }
    return json.dumps(config, indent=2)


# ---------------------------------------------------------------------------------------------
# Processes


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test process dies, even by SIGKILL (Linux prctl).

    Without it a killed pytest leaves etcd and the apiserver running in their own sessions.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class Component:
    """One server process of the control plane, in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
    ) -> Component:
        with log.open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return cls(name, process, log)

    def check_running(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise TestbedError(
                f"{self.name} exited with code {code}; last lines of its log:\n{log_tail(self.log)}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout)
        # Children left in the group (none expected) go too.
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


# ---------------------------------------------------------------------------------------------
# The control plane


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver + kube-controller-manager, and clients bound to it."""

    binaries: TestbedBinaries
    workdir: Path
    api_url: str = ""
    ca_file: Path = Path()
    admin_token: str = ""
    kubeconfig: Path = Path()
    components: list[Component] = field(default_factory=list)
    _token_configs: int = 0

    # -- clients ------------------------------------------------------------------------------

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """Environment for a client process: our kubeconfig; caches kept inside the work dir."""
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(kubeconfig or self.kubeconfig),
            KUBECACHEDIR=str(self.workdir / "kube-cache"),
            HELM_CACHE_HOME=str(self.workdir / "helm" / "cache"),
            HELM_CONFIG_HOME=str(self.workdir / "helm" / "config"),
            HELM_DATA_HOME=str(self.workdir / "helm" / "data"),
        )
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run our kubectl (same release as the apiserver) as admin, or as ``kubeconfig``'s user."""
        return self._run([str(self.binaries.kubectl), *args], input, check, kubeconfig, timeout)

    def kubectl_json(self, *args: str, kubeconfig: Path | None = None) -> Any:
        """Run kubectl with ``-o json`` and decode what it prints."""
        return json.loads(self.kubectl(*args, "-o", "json", kubeconfig=kubeconfig).stdout)

    def helm(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        return self._run([str(self.binaries.helm), *args], input, check, kubeconfig, timeout)

    def create_token(self, namespace: str, serviceaccount: str, duration: str = "1h") -> str:
        """A real ServiceAccount token from the TokenRequest API (`kubectl create token`)."""
        result = self.kubectl(
            "create", "token", serviceaccount, "--namespace", namespace, f"--duration={duration}"
        )
        return result.stdout.strip()

    def kubeconfig_for_token(self, token: str, user: str = "token-user") -> Path:
        """A kubeconfig file that talks to this apiserver with ``token``."""
        self._token_configs += 1
        path = self.workdir / f"kubeconfig-{self._token_configs}-{user}"
        path.write_text(kubeconfig_yaml(self.api_url, self.ca_file, token, user))
        path.chmod(0o600)
        return path

    def api_get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """GET an API path as admin (or with ``token``): (HTTP status, JSON body, or text)."""
        request = urllib.request.Request(
            self.api_url + path,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return response.status, _decode_body(response.headers, response.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode_body(error.headers, error.read())

    def _run(
        self,
        argv: list[str],
        input: str | None,
        check: bool,
        kubeconfig: Path | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise CommandError(result.returncode, argv, result.stdout, result.stderr)
        return result

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process (newest first, with their process groups) and remove the work dir."""
        while self.components:
            self.components.pop().stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_control_plane(
    binaries: TestbedBinaries | None = None, timeout: float = 180.0
) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager on loopback; wait until usable.

    The returned object owns a temporary directory with the data, keys, kubeconfigs and one log
    file per component (``logs/<name>.log``); ``stop()`` ends the processes and removes it.
    """
    workdir = Path(tempfile.mkdtemp(prefix="noctis-kube-"))
    plane = ControlPlane(binaries or testbed_binaries(), workdir)
    try:
        (workdir / "logs").mkdir()
        etcd_client_port, etcd_peer_port, api_port = free_ports(3)
        etcd_port = _start_etcd(plane, etcd_client_port, etcd_peer_port, timeout)
        _start_apiserver(plane, etcd_port, api_port, timeout)
        _start_controller_manager(plane, timeout)
    except BaseException:
        plane.stop()
        raise
    return plane


def etcd_command(etcd: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    """A one-member etcd on loopback, without fsync (test data only)."""
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd),
        "--name=noctis-test",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=noctis-test={peer_url}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def etcd_healthy(client_port: int) -> bool:
    return _http_ok(f"http://127.0.0.1:{client_port}/health")


def write_token_file(path: Path, users: Sequence[tuple[str, str, Sequence[str]]]) -> None:
    """kube-apiserver's --token-auth-file: one ``token,user,uid,"group1,group2"`` line per user."""
    lines = [f'{token},{user},{user},"{",".join(groups)}"' for token, user, groups in users]
    path.write_text("".join(f"{line}\n" for line in lines))
    path.chmod(0o600)


def apiserver_common_flags(
    etcd_port: int, secure_port: int, tokens: Path, sa_key: Path, sa_pub: Path
) -> list[str]:
    """The kube-apiserver flags every test bed shares (etcd, token users, ServiceAccounts)."""
    return [
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--secure-port={secure_port}",
        f"--token-auth-file={tokens}",
        "--allow-privileged=true",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={sa_pub}",
        f"--service-account-signing-key-file={sa_key}",
    ]


def wait_healthy(component: Component, probe: Callable[[], bool], timeout: float) -> None:
    """Wait until ``probe`` passes; fail at once, with its log, if the component exits."""

    def ready() -> bool:
        component.check_running()
        try:
            return probe()
        except (OSError, ValueError):
            return False

    wait.until(
        ready,
        timeout=timeout,
        what=f"{component.name} to become ready",
        interval=0.2,
        context=lambda: f"last lines of {component.name}'s log:\n{log_tail(component.log)}",
    )


def _start_etcd(plane: ControlPlane, client_port: int, peer_port: int, timeout: float) -> int:
    component = Component.start(
        "etcd",
        etcd_command(plane.binaries.etcd, plane.workdir / "etcd", client_port, peer_port),
        plane.workdir / "logs" / "etcd.log",
    )
    plane.components.append(component)
    wait_healthy(component, lambda: etcd_healthy(client_port), timeout)
    return client_port


def _start_apiserver(plane: ControlPlane, etcd_port: int, port: int, timeout: float) -> None:
    workdir = plane.workdir
    plane.admin_token = secrets.token_urlsafe(32)
    tokens = workdir / "tokens.csv"
    write_token_file(tokens, [(plane.admin_token, "admin", ["system:masters"])])
    sa_key, sa_pub = write_service_account_keys(workdir)
    cert_dir = workdir / "apiserver-certs"
    plane.api_url = f"https://127.0.0.1:{port}"
    plane.ca_file = cert_dir / "apiserver.crt"  # self-signed by the apiserver at start
    component = Component.start(
        "kube-apiserver",
        [
            str(plane.binaries.kube_apiserver),
            *apiserver_common_flags(etcd_port, port, tokens, sa_key, sa_pub),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # Endpoints may not hold loopback addresses; nothing runs in-cluster to use them.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={cert_dir}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
        ],
        workdir / "logs" / "kube-apiserver.log",
    )
    plane.components.append(component)
    wait.until(plane.ca_file.exists, timeout=timeout, what="kube-apiserver's serving certificate")
    wait_healthy(component, lambda: plane.api_get("/readyz")[0] == 200, timeout)
    plane.kubeconfig = workdir / "kubeconfig-admin"
    plane.kubeconfig.write_text(
        kubeconfig_yaml(plane.api_url, plane.ca_file, plane.admin_token, "admin")
    )
    plane.kubeconfig.chmod(0o600)


def _start_controller_manager(plane: ControlPlane, timeout: float) -> None:
    component = Component.start(
        "kube-controller-manager",
        [
            str(plane.binaries.kube_controller_manager),
            f"--kubeconfig={plane.kubeconfig}",
            "--controllers=*",
            f"--service-account-private-key-file={plane.workdir / 'sa.key'}",
            f"--root-ca-file={plane.ca_file}",
            "--use-service-account-credentials=false",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
        ],
        plane.workdir / "logs" / "kube-controller-manager.log",
    )
    plane.components.append(component)
    # The serviceaccount controller creating `default` proves the controllers run.
    default_sa = "/api/v1/namespaces/default/serviceaccounts/default"
    wait_healthy(component, lambda: plane.api_get(default_sa)[0] == 200, timeout)


def _decode_body(headers: Message, body: bytes) -> Any:
    if headers.get_content_type() == "application/json":
        return json.loads(body)
    return body.decode(errors="replace")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


class RunsKubectl(Protocol):
    """The control plane here, or the one-node cluster (support.cluster)."""

    def kubectl(self, *args: str, check: bool = True) -> Any: ...


@contextlib.contextmanager
def fresh_namespace(kube: RunsKubectl, prefix: str = "test") -> Iterator[str]:
    """A new namespace for the length of a with block, deleted (asynchronously) after it."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


ESTABLISHED = '{.status.conditions[?(@.type=="Established")].status}'
NOCTIS_CRDS = ("storagepools", "facilities", "archives", "dicomnodes", "routes", "kopfpeerings")


def install_noctis_crds(kube: ControlPlane) -> None:
    """Apply the repository's CRDs and wait until the API server serves each of them."""
    kube.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    for crd in NOCTIS_CRDS:
        group = "kopf.dev" if crd == "kopfpeerings" else "pacs.noctis.io"
        wait.until(
            lambda name=f"crd/{crd}.{group}": (
                kube.kubectl("get", name, "-o", f"jsonpath={ESTABLISHED}", check=False).stdout
                == "True"
            ),
            timeout=30,
            what=f"CRD {crd}.{group} to be established",
            interval=0.2,
        )
