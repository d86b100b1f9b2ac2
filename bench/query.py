"""C-FIND benchmark: dcmtk findscu, PatientName=A* at STUDY level, against each archive.

The figure is the wall time of one findscu process (association, query, all responses,
release), so it includes findscu's own start-up (~10 ms), the same for every target.
"""

from __future__ import annotations

import re

from bench.procs import LOOPBACK, dcmtk_environment, dcmtk_tool, run_tool
from bench.target import CALLING_AE, Target
from bench.timing import Timing, measure

PENDING = re.compile(r"Find Response: \d+ \(Pending\)")
# What a workstation's study list asks for: the matching key plus the usual columns.
RETURN_KEYS = (
    "PatientID",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
)


def findscu_argv(target: Target, pattern: str) -> list[str]:
    keys = ["QueryRetrieveLevel=STUDY", f"PatientName={pattern}", *RETURN_KEYS]
    return [
        dcmtk_tool("findscu"),
        "-S",
        "-aet",
        CALLING_AE,
        "-aec",
        target.ae_title,
        *(arg for key in keys for arg in ("-k", key)),
        LOOPBACK,
        str(target.dicom_port),
    ]


def bench_cfind(target: Target, *, expected: int, runs: int, pattern: str = "A*") -> Timing:
    argv = findscu_argv(target, pattern)
    env = dcmtk_environment()

    def once() -> str:
        result = run_tool(argv, env=env, timeout=120)
        output = result.stdout + result.stderr
        if result.returncode != 0:
            raise RuntimeError(f"findscu exited {result.returncode}: {output[-300:]}")
        matches = len(PENDING.findall(output))
        if matches != expected:
            raise AssertionError(f"{matches} matches, expected {expected}")
        return f"{matches} studies"

    return measure(target.name, "C-FIND PatientName=A*", runs, once)
