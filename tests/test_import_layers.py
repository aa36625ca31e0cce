"""The floors of the import graph (docs/modules.md draws them).

- Every module of ours sits on one floor (`FLOORS`: ground, leaves, protocol, runtime,
  services, applications) and imports only from its own floor or lower ones.
- No module of ours is longer than 400 lines (generated code aside).
- The leaves `keys/`, `policies/` and `audit/core/` load without any transport: importing
  every one of their modules pulls in no gRPC and nothing of fedscore but the error
  hierarchy and the generated wire types.
- The four services `node/`, `consent/`, `coordinator/` and `helper/` never import each
  other.
- Nothing but the CLI imports the CLI (the demo takes its release name from the policy).
- The audit clients (the regulator's verifier, the history client) share only
  `audit/core/contract.py` with the audit servicer.
- No cycle among our modules, counting imports made only for type checking.

Each rule is checked on the real modules (a fresh interpreter for the first, the parsed
source for the second), so a new upward or sideways import fails here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEAVES = ("keys", "policies", "audit.core")
SERVICES = ("node", "consent", "coordinator", "helper")
LEAF_MAY_USE = ("fedscore.errors", "fedscore.v1", "audit.core")

_PROBE = """
import importlib, json, pkgutil, sys
before = set(sys.modules)
for package in {leaves!r}:
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        importlib.import_module(package + "." + info.name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _loaded_by_leaves() -> list[str]:
    probe = _PROBE.format(leaves=LEAVES)
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def _imports(path: Path) -> set[str]:
    """Every module a file imports; `from a import b` names `a` and also `a.b`.

    `a.b` may be a submodule (`from fedscore import cli`) or just a name in `a`; callers
    that need modules only trim it back to one they know.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.integration  # a fresh interpreter: a subprocess
def test_the_leaves_load_without_a_transport() -> None:
    loaded = _loaded_by_leaves()
    assert {"keys.envelope", "policies.loader", "audit.core.checkpoint"} <= set(loaded)
    assert [m for m in loaded if m == "grpc" or m.startswith("grpc.")] == []


@pytest.mark.integration  # a fresh interpreter: a subprocess
def test_the_leaves_use_nothing_of_fedscore_but_errors_and_wire_types() -> None:
    ours = [
        m
        for m in _loaded_by_leaves()
        if m.split(".")[0] in ("fedscore", "audit", *SERVICES) and m not in ("fedscore", "audit")
    ]
    assert ours, "the leaves use the error hierarchy, so something must be listed"
    upward = [m for m in ours if not m.startswith(LEAF_MAY_USE)]
    assert upward == []


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another(service: str) -> None:
    others = tuple(s for s in SERVICES if s != service)
    sideways = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / service).rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in others
    }
    assert sideways == set()


def test_nothing_but_the_cli_imports_the_cli() -> None:
    """The CLI is the top floor: the demo, the clients and the services sit below it."""
    upward = {
        f"{path.relative_to(ROOT)} imports {name}"
        for package in ("fedscore", "keys", "policies", "audit", *SERVICES)
        for path in sorted((ROOT / package).rglob("*.py"))
        if "cli" not in path.relative_to(ROOT).parts
        for name in _imports(path)
        if name == "fedscore.apps.cli" or name.startswith("fedscore.apps.cli.")
    }
    assert upward == set()


@pytest.mark.parametrize("client_module", ["audit/client/history.py", "audit/client/log_fetch.py"])
def test_the_audit_clients_do_not_import_the_servicer(client_module: str) -> None:
    """They share only `audit.core.contract` with it: a client runs where no servicer does.
    (The regulator's verifier fetches through `audit/client/log_fetch.py`.)"""
    names = _imports(ROOT / client_module)
    assert "audit.core.contract" in names
    assert not any(
        "audit.servicer" in _imports(path) for path in (ROOT / "audit" / "client").glob("*.py")
    )


PACKAGES = ("fedscore", "keys", "policies", "audit", *SERVICES)


def _module_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (generated wire code aside)."""
    files = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "v1" not in path.relative_to(ROOT).parts
    }
    graph: dict[str, set[str]] = {module: set() for module in files}
    for module, path in files.items():
        for name in _imports(path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                graph[module].add(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_ours_is_in_an_import_cycle() -> None:
    graph = _module_graph()
    assert "policies.statistics" in graph["policies.model"]  # real edges were read
    assert _cycles(graph) == []


# Lowest first. A module's floor is that of the longest prefix listed; it may import only
# from its own floor or a lower one. Between the services, `test_no_service_imports_another`.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground", ("fedscore", "fedscore.errors", "fedscore.memo", "fedscore.noise", "audit")),
    ("leaves", ("keys", "policies", "audit.core")),
    ("protocol", ("fedscore.protocol",)),
    ("runtime", ("fedscore.runtime", "audit.store", "audit.servicer")),
    ("services", SERVICES),
    ("applications", ("fedscore.apps", "audit.client")),
)
MAX_LINES = 400


def _floor(module: str) -> int:
    best = (-1, -1)
    for number, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), number))
    assert best[1] >= 0, f"{module} is on no floor: add it to FLOORS and docs/modules.md"
    return best[1]


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} ({FLOORS[_floor(module)][0]}) imports {target} ({FLOORS[_floor(target)][0]})"
        for module, targets in graph.items()
        for target in targets
        if _floor(target) > _floor(module)
    )


def test_every_module_is_on_a_floor_and_imports_nothing_above_it() -> None:
    graph = _module_graph()
    floors = {FLOORS[_floor(module)][0] for module in graph}
    assert floors == {name for name, _ in FLOORS}  # every floor is inhabited
    assert _upward(graph) == []


def test_an_upward_import_is_named() -> None:
    graph = {"keys.envelope": {"fedscore.runtime.rpc"}, "fedscore.runtime.rpc": {"keys.envelope"}}
    assert _upward(graph) == ["keys.envelope (leaves) imports fedscore.runtime.rpc (runtime)"]


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "v1" not in path.relative_to(ROOT).parts
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_module_re_exports_names_through_all() -> None:
    """A name is imported from the module that defines it, never through an `__all__` list."""
    listing = sorted(
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "v1" not in path.relative_to(ROOT).parts
        and any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for node in ast.parse(path.read_text(encoding="utf-8")).body
        )
    )
    assert listing == []
