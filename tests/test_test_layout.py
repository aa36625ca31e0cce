"""The suite's own layout: shared helpers live in tests/harness/, and the unit-only run is honest.

No test module imports another (what two test modules share is a harness module, and its
fixtures are in tests/conftest.py). A test not marked `integration` cannot start a server
or a process: tests/conftest.py's guard fails it, naming the marker; a marked test runs
the real thing.
"""

from __future__ import annotations

import ast
import asyncio
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc.aio
import pytest

from fedscore.runtime.rpc import TlsMaterial, start_server
from keys.tls import create_ca, issue_certificate

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


# --- the guard of the unit-only run -----------------------------------------------------


def _tls() -> TlsMaterial:
    ca_key, ca_cert = create_ca("guard-test-ca")
    key, cert = issue_certificate(ca_key, ca_cert, "guard-test", ["localhost"])
    return TlsMaterial(ca_pem=ca_cert, cert_pem=cert, key_pem=key)


async def _serve_and_stop(tls: TlsMaterial) -> int:
    running = await start_server(tls, "127.0.0.1:0", {})
    try:
        return running.port
    finally:
        await running.stop(0)


async def _child_says_hello() -> bytes:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('hello')", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    return out


def _refused(start: Callable[[], object]) -> str:
    """The guard's message when `start` is called."""
    with pytest.raises(pytest.fail.Exception) as refused:
        start()
    return str(refused.value)


def test_an_unmarked_test_can_start_no_server() -> None:
    tls = _tls()
    message = _refused(lambda: asyncio.run(_serve_and_stop(tls)))
    assert "starts a gRPC server" in message
    assert "not marked 'integration'" in message and 'pytest -m "not integration"' in message
    assert "test_an_unmarked_test_can_start_no_server" in message
    assert "starts a gRPC server" in _refused(lambda: grpc.aio.server())


def test_an_unmarked_test_can_start_no_process() -> None:
    command = [sys.executable, "-c", "pass"]
    for start in (
        lambda: subprocess.run(command, check=False),
        lambda: subprocess.Popen(command),
        lambda: subprocess.check_output(command),
        lambda: os.system("true"),  # noqa: S605
        lambda: asyncio.run(_child_says_hello()),
        lambda: multiprocessing.Process(target=print).start(),
    ):
        message = _refused(start)
        assert "starts a subprocess" in message and "integration" in message


@pytest.mark.integration
def test_a_marked_test_starts_the_real_server_and_process() -> None:
    assert asyncio.run(_serve_and_stop(_tls())) > 0
    done = subprocess.run([sys.executable, "-c", "print('hello')"], capture_output=True, check=True)
    assert done.stdout == b"hello\n"
    assert asyncio.run(_child_says_hello()) == b"hello\n"
