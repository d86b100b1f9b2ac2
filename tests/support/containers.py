"""The project's container images, built by scripts/build-images.sh and run with podman.

``build_images()`` runs the script (it builds only what changed: an image whose tag exists is
reused) and returns the references it printed. ``Container`` runs one image detached, on the
host's network so it reaches the test servers on 127.0.0.1 (the test sets every listening
address of the container to 127.0.0.1 too), and is removed by whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from support import wait

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-images.sh"
CONTAINERS_CONF = REPO_ROOT / "images" / "testbed" / "containers.conf"
NOCTIS_COMPONENTS = ("operator", "scp", "worker", "api")
BUILD_TIMEOUT = 3600.0


class ImageError(RuntimeError):
    """podman is missing, or an image did not build or a container did not run."""


@dataclass(frozen=True)
class BuiltImages:
    """What scripts/build-images.sh printed: the Noctis images' registry and tag, and more."""

    registry: str
    tag: str
    assignments: dict[str, str]

    def noctis(self, component: str) -> str:
        return f"{self.registry}/noctis-{component}:{self.tag}"


def podman_env() -> dict[str, str]:
    return {
        **os.environ,
        "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)),
    }


def podman(
    *args: str, check: bool = True, timeout: float = 120.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise ImageError("podman is not installed: run scripts/test (scripts/bootstrap.sh --test)")
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        env=podman_env(),
        timeout=timeout,
        input=input,
    )
    if check and result.returncode != 0:
        raise ImageError(
            f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr.strip()}"
        )
    return result


def parse_assignments(text: str) -> dict[str, str]:
    """The NAME=value lines of the script's stdout."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.isidentifier() and name.isupper():
            found[name] = value
    return found


def build_images(images: Sequence[str] = (), *, summary: Path | None = None) -> BuiltImages:
    """Run scripts/build-images.sh for `images` (default: all); its stderr goes to ours."""
    command = [str(BUILD_SCRIPT), *images]
    if summary is not None:
        command += ["--summary", str(summary)]
    result = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env=podman_env(),
        timeout=BUILD_TIMEOUT,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        raise ImageError(f"{BUILD_SCRIPT.name} failed ({result.returncode}); see its output above")
    found = parse_assignments(result.stdout)
    return BuiltImages(found["NOCTIS_IMAGE_REGISTRY"], found["NOCTIS_IMAGE_TAG"], found)


def image_user(ref: str) -> str:
    return podman("image", "inspect", "--format", "{{.Config.User}}", ref).stdout.strip()


def image_bytes(ref: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


class Container:
    """One detached container (``run``: on the host's network); ``stop()`` removes it."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def run(
        cls,
        image: str,
        *args: str,
        env: dict[str, str] | None = None,
        volumes: Sequence[str] = (),
        user: str | None = None,
    ) -> Container:
        options = ["--network", "host"]
        for volume in volumes:
            options += ["--volume", volume]
        if user is not None:
            options += ["--user", user]
        return cls.run_with(image, options, list(args), env or {})

    @classmethod
    def run_with(
        cls, image: str, options: Sequence[str], args: Sequence[str], env: dict[str, str]
    ) -> Container:
        """`podman run --detach` with these options (network, user, mounts ...)."""
        name = f"noctis-test-{secrets.token_hex(4)}"
        environment = [item for key, value in env.items() for item in ("--env", f"{key}={value}")]
        podman("run", "--detach", "--name", name, *options, *environment, image, *args)
        return cls(name)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, check=check)

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def process_uid(self) -> int:
        """The real uid of the container's main process, as the host's kernel sees it."""
        pid = podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout.strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
        raise ImageError(f"no Uid line for process {pid}")

    def stop(self) -> None:
        podman("rm", "--force", "--time", "5", self.name, check=False, timeout=60)


@contextlib.contextmanager
def running(image: str, *args: str, **options: object) -> Iterator[Container]:
    """A container for the length of a with block; its log is printed if the block fails."""
    container = Container.run(image, *args, **options)  # type: ignore[arg-type]
    try:
        yield container
    except BaseException:
        print(f"--- log of {image} ({container.name}):\n{container.logs()[-6000:]}")
        raise
    finally:
        container.stop()


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, container: Container
) -> None:
    """Wait until ``condition()`` holds; fail at once, with the container's log, if it stops."""

    def holds() -> object:
        if not container.running():
            raise ImageError(f"the container stopped before {what}:\n{container.logs()[-4000:]}")
        return condition()

    wait.until(holds, timeout=timeout, what=what, interval=0.3)
