"""The shape of the code: no import cycle among modules, and the packages in their places.

Every import is counted, inside functions too: the controller and the HAL never import the
simulator (it plugs in through entry points), and no two modules need each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("controller", "hal", "simulator", "firmware_py", "hub")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("**/*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``name`` imports, anywhere in it."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def package_of(module: str) -> str:
    return module.split(".")[0]


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(graph()) == []


def test_the_controller_and_the_hal_never_import_the_simulator():
    wrong = [(a, b) for a, targets in graph().items() for b in targets
             if package_of(a) in ("controller", "hal") and package_of(b) == "simulator"]
    assert wrong == []


def test_the_hal_and_the_firmware_never_import_the_controller():
    wrong = [(a, b) for a, targets in graph().items() for b in targets
             if package_of(a) in ("hal", "firmware_py") and package_of(b) == "controller"]
    assert wrong == []


def test_the_packages_do_not_need_each_other_both_ways():
    edges: dict[str, set[str]] = {}
    for a, targets in graph().items():
        for b in targets:
            if package_of(a) != package_of(b):
                edges.setdefault(package_of(a), set()).add(package_of(b))
    assert cycles(edges) == []


def test_the_check_finds_a_cycle_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nspvend_s_own_backends_are_the_entry_points_pyproject_names():
    import tomllib

    import hal

    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert hal.OWN_BACKENDS == project["entry-points"]["nspvend.hal"]


def test_a_machine_in_english_loads_no_catalog_no_sqlite_utils_and_no_plugins(tmp_path):
    """The footprint (bench/run.py): what the config does not use is not imported."""
    import subprocess
    import sys

    from tests.machines import write_machine

    config = write_machine(tmp_path, "lean-01", "sim", sim={"control": "sim.sock"},
                           database={"path": "nspvend.db"}, control={"socket": "c.sock"})
    made = (f"from controller.ledger import Ledger; Ledger({str(tmp_path / 'nspvend.db')!r},"
            " 'lean-01').close()")  # a first start makes the file (sqlite-utils migrates it)
    subprocess.run([sys.executable, "-c", made], cwd=ROOT, check=True, timeout=60)
    probe = ("import sys, threading, os, time\n"
             "def look():\n"
             "    time.sleep(3)\n"
             "    print(sorted({m.split('.')[0] for m in sys.modules} & {'babel', 'sqlite_utils',"
             " 'click', 'hub', 'PIL', 'luma', 'RPLCD'}), flush=True)\n"
             "    os._exit(0)\n"
             "threading.Thread(target=look, daemon=True).start()\n"
             "from controller.cli import main\n"
             f"main(['run', '--config', {str(config)!r}])\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "[]", (done.stdout, done.stderr[-2000:])
