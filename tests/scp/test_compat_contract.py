"""The contract of `noctis.scp.fast.compat` (compat_contract.py) holds for every supported
pynetdicom version: each is installed once, outside the repository, into
``~/.cache/noctis-testbed/pynetdicom-<version>`` (``pip install --no-deps --target``; also by
``scripts/bootstrap.sh --test``), and the contract runs in a subprocess with that directory
first on the import path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

# Every pynetdicom release the scp extra's pin allows (3.0.2 was never released; PyPI has
# nothing newer than 3.0.4).
SUPPORTED = ("3.0.0", "3.0.1", "3.0.3", "3.0.4")
CACHE = Path.home() / ".cache" / "noctis-testbed"
REPO = Path(__file__).resolve().parents[2]
CONTRACT = Path(__file__).with_name("compat_contract.py")


def pynetdicom_dir(version: str) -> Path:
    """pynetdicom ``version`` installed on its own (once; later runs reuse it)."""
    target = CACHE / f"pynetdicom-{version}"
    if not (target / "pynetdicom" / "__init__.py").is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
             str(target), f"pynetdicom=={version}"],
            check=True,
        )  # fmt: skip
    return target


def test_the_pin_allows_the_supported_versions_and_nothing_untested() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    pins = [Requirement(r) for r in extras["scp"] if r.startswith("pynetdicom")]
    assert pins, "no pynetdicom requirement in the scp extra"
    for pin in pins:
        assert [v for v in SUPPORTED if v in pin.specifier] == list(SUPPORTED), pin
        # every release the pin allows is tested: the next ones are not allowed yet
        assert not any(v in pin.specifier for v in ("2.1.1", "3.0.5", "3.1.0", "4.0.0")), pin


@pytest.mark.parametrize("version", SUPPORTED)
def test_compat_contract(version: str, tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(pynetdicom_dir(version)), str(REPO / "src"), str(REPO / "tests")]
        ),
        "NOCTIS_PYNETDICOM_VERSION": version,
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(CONTRACT), "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "contract")],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"pynetdicom {version}:\n{result.stdout[-6000:]}"
