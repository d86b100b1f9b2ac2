"""How many SCP processes `noctis serve` runs unless told: two where it may use two CPUs or
more, counting a container's CPU quota (cgroup files written here as the kernel shows them;
`test_server` runs two real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from noctis.embedded import serve_scp_processes, usable_cpus


def cgroup_v2(root: Path, cpu_max: str) -> Path:
    root.mkdir()
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root: Path, quota: int, period: int) -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})


@pytest.mark.usefixtures("two_cpus")
def test_a_quota_of_one_cpu_means_one_process(tmp_path: Path) -> None:
    assert serve_scp_processes(cgroup_v2(tmp_path / "v2", "100000 100000")) == 1
    assert serve_scp_processes(cgroup_v1(tmp_path / "v1", 50000, 100000)) == 1
    assert usable_cpus(cgroup_v2(tmp_path / "half", "50000 100000")) == 0.5


@pytest.mark.usefixtures("two_cpus")
def test_without_a_quota_the_cpus_it_may_run_on_decide(tmp_path: Path) -> None:
    assert serve_scp_processes(cgroup_v2(tmp_path / "v2", "max 100000")) == 2
    assert serve_scp_processes(cgroup_v1(tmp_path / "v1", -1, 100000)) == 2
    assert serve_scp_processes(tmp_path / "no-cgroup-files") == 2
    assert usable_cpus(cgroup_v2(tmp_path / "four", "400000 100000")) == 2  # capped by CPUs


def test_one_cpu_means_one_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert serve_scp_processes(tmp_path / "no-cgroup-files") == 1
