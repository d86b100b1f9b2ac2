"""The worker's task functions, by task name. Each takes the Archive first, then keywords.

The same functions run under Celery (`noctis worker`) and on the in-process queue of
`noctis serve`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TASKS: dict[str, Callable[..., Any]] = {}
