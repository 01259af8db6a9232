"""The package boundaries of ShaleDB, enforced (docs/architecture.md).

* An underscore name never crosses a package boundary: no ``from
  shaledb.x import _name`` and no ``module._name`` on a module of another
  package.
* Imports run one way: each package may import only the packages listed
  for it in ``ALLOWED`` (lower layers); nothing below ``shaledb.db`` imports
  ``shaledb.db``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = {"core": "shaledb", "kernels": "shaledb.kernels", "storage": "shaledb.storage"}
SUBPACKAGES = {"kernels", "storage", "format", "sst", "manifest", "memtable", "flush", "read", "compact", "gc", "ipc", "cli",
               "readonly", "checkpoints", "clones"}
SUBPACKAGES |= {"bulk", "dask"}  # bulk loads (docs/bulk.md)

#: unit -> the units it may import (besides itself).  ``shaledb`` (the
#: package's __init__) re-exports lazily and may name anything.
_BASE = {"shaledb.errors", "shaledb.lazy"}
ALLOWED: dict[str, set[str]] = {
    "shaledb.errors": set(),
    "shaledb.lazy": set(),
    "shaledb.failpoints": _BASE,
    "shaledb.storage": _BASE,
    # kernels take only the record-format constants from format (format.record, format.enums)
    "shaledb.kernels": _BASE | {"shaledb.format"},
    "shaledb.format": _BASE | {"shaledb.kernels"},
    # inter-process plumbing (control channel, child launcher, parent watch)
    "shaledb.ipc": _BASE | {"shaledb.storage", "shaledb.options", "shaledb.failpoints", "shaledb.memtable"},
    "shaledb.options": _BASE | {"shaledb.failpoints", "shaledb.format", "shaledb.storage"},
    "shaledb.sst": _BASE | {"shaledb.format", "shaledb.kernels", "shaledb.storage"},
    "shaledb.manifest": _BASE | {"shaledb.format", "shaledb.storage", "shaledb.failpoints"},
    "shaledb.memtable": _BASE | {"shaledb.format", "shaledb.kernels", "shaledb.failpoints", "shaledb.options"},
    "shaledb.gc": _BASE
    | {"shaledb.format", "shaledb.manifest", "shaledb.storage", "shaledb.failpoints", "shaledb.options"},
    "shaledb.read": _BASE
    | {"shaledb.format", "shaledb.kernels", "shaledb.sst", "shaledb.manifest", "shaledb.memtable",
       "shaledb.storage", "shaledb.options"},
    "shaledb.flush": _BASE
    | {"shaledb.format", "shaledb.kernels", "shaledb.sst", "shaledb.manifest", "shaledb.memtable",
       "shaledb.storage", "shaledb.options", "shaledb.failpoints", "shaledb.ipc"},
    "shaledb.compact": _BASE
    | {"shaledb.format", "shaledb.kernels", "shaledb.sst", "shaledb.manifest", "shaledb.storage",
       "shaledb.options", "shaledb.failpoints", "shaledb.gc", "shaledb.ipc"},
    # bulk loads: SSTs built outside the engine (docs/bulk.md)
    "shaledb.bulk": _BASE | {"shaledb.format", "shaledb.kernels", "shaledb.sst", "shaledb.manifest", "shaledb.storage"},
    # Dask on top: opens the database through the package (shaledb.open), never shaledb.db
    "shaledb.dask": _BASE | {"shaledb", "shaledb.bulk", "shaledb.storage", "shaledb.format"},
    # Db.status() and `shaledb info`: typed status, tree shape and compaction backlog from a manifest
    "shaledb.status": _BASE | {"shaledb.manifest", "shaledb.compact", "shaledb.options", "shaledb.storage"},
    # checkpoints by store or url (reader-role manifest updates)
    "shaledb.checkpoints": _BASE | {"shaledb.format", "shaledb.manifest", "shaledb.storage", "shaledb.options"},
    # read-only readers and snapshots: the read path over store views
    "shaledb.readonly": _BASE
    | {"shaledb.format", "shaledb.kernels", "shaledb.manifest", "shaledb.read", "shaledb.memtable",
       "shaledb.storage", "shaledb.options", "shaledb.checkpoints"},
    # clones: a descriptor, the source's WAL tail and a first manifest in the destination
    "shaledb.clones": _BASE
    | {"shaledb.format", "shaledb.manifest", "shaledb.storage", "shaledb.options", "shaledb.checkpoints",
       "shaledb.failpoints"},
}


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    pkg = SOURCES[parts[0]]
    rest = parts[1:]
    if rest and rest[-1] == "__init__":
        rest = rest[:-1]
    return ".".join([pkg, *rest])


def _unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in SUBPACKAGES:
        return ".".join(parts[:2])
    return ".".join(parts[:2]) if len(parts) >= 2 else module


def _sources():
    for d in SOURCES:
        for path in sorted((ROOT / d).rglob("*.py")):
            yield path, _module_name(path)


def _imports(tree: ast.AST):
    """(lineno, imported module, imported names, alias->module bindings)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [a.name for a in node.names], {
                (a.asname or a.name): f"{node.module}.{a.name}" for a in node.names
            }
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, [], {(a.asname or a.name.split(".")[0]): a.name if a.asname else a.name.split(".")[0]}


def _violations():
    private, direction = [], []
    for path, mod in _sources():
        unit = _unit(mod)
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}
        for lineno, target, names, binds in _imports(tree):
            if not target.startswith("shaledb"):
                continue
            tunit = _unit(target)
            where = f"{path.relative_to(ROOT)}:{lineno}"
            if tunit != unit:
                for n in names:
                    if n.startswith("_"):
                        private.append(f"{where} imports {target}.{n}")
                if unit in ALLOWED and tunit not in ALLOWED[unit]:
                    direction.append(f"{where}: {unit} imports {tunit}")
                if tunit == "shaledb.db" and unit != "shaledb":
                    direction.append(f"{where}: {unit} imports shaledb.db")
            aliases.update({k: v for k, v in binds.items() if v.startswith("shaledb")})
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _unit(aliases[node.value.id]) != unit
            ):
                private.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}"
                )
    return sorted(set(private)), sorted(set(direction))


def test_every_source_unit_has_rules():
    units = {_unit(mod) for _, mod in _sources()}
    missing = sorted(u for u in units if u not in ALLOWED and u not in {"shaledb", "shaledb.__main__", "shaledb.db", "shaledb.cli"})
    assert not missing, f"add import rules for {missing}"


def test_no_private_name_crosses_a_package_boundary():
    private, _ = _violations()
    assert not private, "underscore names used across packages:\n" + "\n".join(private)


def test_imports_run_one_way():
    _, direction = _violations()
    assert not direction, "imports against the layering:\n" + "\n".join(direction)


@pytest.mark.parametrize("pkg", sorted(SUBPACKAGES - {"cli"}))
def test_each_package_declares_its_surface(pkg):
    import importlib

    name = f"shaledb.{pkg}"
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError:
        pytest.skip(f"{name} does not exist yet")
    assert isinstance(getattr(mod, "__all__", None), list), f"{name} has no __all__"
