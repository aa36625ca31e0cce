"""The suite's own layout: shared helpers live in tests/harness/.

No test module imports another (what two test modules share is a harness module, and its
fixtures are in tests/conftest.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported(path: Path) -> set[str]:
    """Every module name `path` imports, relative imports as '.name'."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names.add(module)
            # `from tests import test_x` and `from . import test_x` name the module last.
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _test_modules_imported(path: Path) -> set[str]:
    """The test modules (test_*) that `path` imports."""
    return {
        part
        for name in _imported(path)
        for part in name.lstrip(".").split(".")
        if part.startswith("test_")
    }


def test_no_test_module_imports_another() -> None:
    modules = sorted(TESTS.glob("test_*.py"))
    assert len(modules) > 30  # the glob found the suite
    offenders = {path.name: found for path in modules if (found := _test_modules_imported(path))}
    assert offenders == {}, "move what test modules share into tests/harness/"


def test_harness_modules_import_no_test_module() -> None:
    helpers = [*(TESTS / "harness").glob("*.py"), TESTS / "conftest.py"]
    offenders = {path.name: found for path in helpers if (found := _test_modules_imported(path))}
    assert offenders == {}


def test_the_import_reader_sees_every_way_of_importing_a_test_module(tmp_path: Path) -> None:
    for line in (
        "import test_audit_service",
        "from test_audit_service import Live",
        "from tests.test_audit_service import Live",
        "from tests import test_audit_service",
        "from . import test_audit_service",
        "import tests.test_audit_service as service",
    ):
        path = tmp_path / "test_example.py"
        path.write_text(f"from pathlib import Path\n{line}\n", "utf-8")
        assert _test_modules_imported(path), line
    path.write_text("from harness.audit import Live\nimport pytest\n", "utf-8")
    assert _test_modules_imported(path) == set()
