"""Which way imports run (docs/ARCHITECTURE.md): common <- node, common <- coordinator; the two
daemons never import each other; the math modules import no transport, logging or file I/O."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MATH = ("alignment", "subspace", "aggregation", "precision", "losses", "checks")


def imports(path):
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("common", {"node", "coordinator", "rosetta", "bench"}),
        ("node", {"coordinator", "rosetta", "bench"}),
        ("coordinator", {"node", "rosetta", "bench"}),
    ],
)
def test_packages_import_only_downwards(package, forbidden):
    for path in (REPO / package).glob("*.py"):
        assert not imports(path) & forbidden, path


def test_math_modules_do_no_io():
    io = {"grpc", "prometheus_client", "logging", "sqlite3", "safetensors", "os", "pathlib", "json"}
    for name in MATH:
        assert not imports(REPO / "common" / f"{name}.py") & io, name
