"""Only `noctis.scp.fast.compat` relies on pynetdicom's internals.

Read from the source (ast over src/noctis): outside compat.py, no module imports a private
pynetdicom module or name, assigns to a pynetdicom module's attribute, assigns ``__class__``,
reads or writes a private member pynetdicom defines on anything but its own ``self``, or, in
a class derived from a pynetdicom class, defines or uses one of pynetdicom's private names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pynetdicom

SOURCE = Path(__file__).resolve().parents[2] / "src" / "noctis"
COMPAT = SOURCE / "scp" / "fast" / "compat.py"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _pynetdicom_private_names() -> frozenset[str]:
    """Every private name pynetdicom's own code defines or uses (attributes, methods,
    functions, modules)."""
    names: set[str] = set()
    root = Path(pynetdicom.__file__).parent
    for path in root.rglob("*.py"):
        if "tests" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.alias):
                names.add(node.name.rsplit(".", 1)[-1])
    names.update(p.stem for p in root.glob("_*.py"))
    return frozenset(name for name in names if _is_private(name))


PRIVATE = _pynetdicom_private_names()


class _Module:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        # local name -> dotted origin, for names imported from pynetdicom or noctis
        self.imported: dict[str, str] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.imported[alias.asname or alias.name.split(".")[0]] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    self.imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    @property
    def name(self) -> str:
        relative = self.path.relative_to(SOURCE.parent).with_suffix("")
        return ".".join(relative.parts)

    def origin(self, expr: ast.expr) -> str:
        """The dotted name an expression refers to, through this module's imports."""
        if isinstance(expr, ast.Name):
            return self.imported.get(expr.id, f"{self.name}.{expr.id}")
        if isinstance(expr, ast.Attribute):
            return f"{self.origin(expr.value)}.{expr.attr}"
        return ""


def _modules() -> list[_Module]:
    return [_Module(path) for path in sorted(SOURCE.rglob("*.py"))]


def _pynetdicom_classes(modules: list[_Module]) -> set[str]:
    """Dotted names of the noctis classes derived, at any depth, from a pynetdicom class."""
    bases: dict[str, list[str]] = {}
    for module in modules:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                bases[f"{module.name}.{node.name}"] = [module.origin(b) for b in node.bases]
    derived: set[str] = set()
    changed = True
    while changed:
        changed = False
        for cls, its_bases in bases.items():
            if cls not in derived and any(
                b.startswith("pynetdicom.") or b in derived for b in its_bases
            ):
                derived.add(cls)
                changed = True
    return derived


def _violations(module: _Module, derived: set[str]) -> list[str]:
    found: list[str] = []

    def where(node: ast.AST) -> str:
        return f"{module.path.relative_to(SOURCE.parent)}:{getattr(node, 'lineno', 0)}"

    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = [*node.module.split("."), *(a.name for a in node.names)]
            if parts[0] == "pynetdicom" and any(_is_private(p) for p in parts):
                found.append(f"{where(node)} imports a private pynetdicom name")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "pynetdicom" and any(_is_private(p) for p in parts):
                    found.append(f"{where(node)} imports {alias.name}")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "__class__":
                    found.append(f"{where(node)} assigns __class__")
                if isinstance(target, ast.Attribute) and module.origin(target.value).startswith(
                    "pynetdicom"
                ):
                    found.append(f"{where(node)} patches {module.origin(target)}")
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            receiver = node.value
            own = isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")
            if not own:
                found.append(f"{where(node)} touches {ast.unparse(node)}")
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ClassDef) and f"{module.name}.{node.name}" in derived:
            for inner in ast.walk(node):
                if isinstance(inner, ast.FunctionDef) and inner.name in PRIVATE:
                    found.append(f"{where(inner)} overrides pynetdicom's {inner.name}")
                if (
                    isinstance(inner, ast.Attribute)
                    and inner.attr in PRIVATE
                    and isinstance(inner.value, ast.Name)
                    and inner.value.id in ("self", "cls")
                ):
                    found.append(f"{where(inner)} uses pynetdicom's {inner.attr}")
    return found


def test_the_private_names_are_known() -> None:
    """The check below has something to check against (the names compat relies on)."""
    assert {"_accepted_cx", "_serve_request", "_kill_thread", "_config"} <= PRIVATE


def test_only_compat_touches_pynetdicom_internals() -> None:
    modules = _modules()
    derived = _pynetdicom_classes(modules)
    assert "noctis.scp.fast.reactor.EventDrivenDUL" in derived  # through compat.DULHooks
    violations = [
        violation
        for module in modules
        if module.path != COMPAT
        for violation in _violations(module, derived)
    ]
    assert violations == []


def test_the_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """The same check flags each kind of violation in a module written to break it."""
    sample = tmp_path / "noctis" / "sample.py"
    sample.parent.mkdir()
    sample.write_text(
        "from pynetdicom import _config, dimse_messages\n"
        "from pynetdicom.association import Association\n"
        "class Mine(Association):\n"
        "    def _serve_request(self, msg, cid):\n"
        "        return self._accepted_cx\n"
        "def f(assoc, other):\n"
        "    assoc._kill = True\n"
        "    other.__class__ = Mine\n"
        "    dimse_messages.NamedTemporaryFile = None\n",
        encoding="utf-8",
    )
    global SOURCE
    saved, SOURCE = SOURCE, tmp_path / "noctis"
    try:
        module = _Module(sample)
        found = _violations(module, _pynetdicom_classes([module]))
    finally:
        SOURCE = saved
    kinds = " ".join(found)
    for expected in (
        "imports a private",
        "overrides pynetdicom's _serve_request",
        "uses pynetdicom's _accepted_cx",
        "touches assoc._kill",
        "assigns __class__",
        "patches pynetdicom.dimse_messages.NamedTemporaryFile",
    ):
        assert expected in kinds, (expected, found)
