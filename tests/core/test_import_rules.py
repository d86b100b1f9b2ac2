"""The package map holds: import-linter checks the contracts in pyproject.toml.

Domain packages (dicom, storage, index, settings, specs) import neither the core nor a process
package; the core imports no process package; scp, api, worker and operator never import each
other; only cli.py and embedded.py import everything; the worker imports pynetdicom only in
worker/dimse_send.py (routing's C-STORE sender).
Imports inside functions and under TYPE_CHECKING count like the others.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
CONTRACTS = REPOSITORY / "pyproject.toml"

# Runs import-linter on the `noctis` under `src` only: another checkout's `noctis` on sys.path
# (an editable install of a sibling worktree) would otherwise join this namespace package.
_LINT = """
import sys
from pathlib import Path

src, contracts = sys.argv[1], sys.argv[2]
sys.path[:] = [src] + [p for p in sys.path if not (Path(p) / "noctis").is_dir()]
from importlinter.cli import lint_imports

sys.exit(lint_imports(config_filename=contracts, no_cache=True, no_logo=True))
"""


def lint(src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _LINT, str(src), str(CONTRACTS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_package_map_holds() -> None:
    result = lint(REPOSITORY / "src")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def copied_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(
        REPOSITORY / "src" / "noctis",
        src / "noctis",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return src


VIOLATIONS = {
    "module level": "from noctis.api.security import Principal\n",
    "inside a function": "def _late():\n    from noctis.api.security import Principal\n",
    "under TYPE_CHECKING": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from noctis.api.security import Principal\n"
    ),
}


@pytest.mark.parametrize("form", VIOLATIONS, ids=list(VIOLATIONS))
def test_a_core_module_importing_the_api_breaks_the_rules(copied_src: Path, form: str) -> None:
    roles = copied_src / "noctis" / "core" / "roles.py"
    original = roles.read_text()
    roles.write_text(original + "\n" + VIOLATIONS[form])
    try:
        result = lint(copied_src)
    finally:
        roles.write_text(original)
    assert result.returncode != 0
    assert "noctis.core.roles -> noctis.api.security" in result.stdout


def test_the_scp_imports_no_metrics_client_before_it_chooses_its_mode() -> None:
    """`noctis scp` with several processes sets prometheus_client's multiprocess directory
    before the client is imported; a module of the SCP's import graph importing it at import
    time would keep the supervisor's own samples out of /metrics (each process's would stay
    local): the scrape would add up only the other processes."""
    probe = (
        "import sys\n"
        "import noctis.scp.process, noctis.scp.server, noctis.core.ingest\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": str(REPOSITORY / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == "False", result.stderr
