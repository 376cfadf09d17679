"""The import rules of ARCHITECTURE.md, read from every module's source.

Floors, lowest first: ``common`` (leaves: errors, atomic files, config loading) <- ``motion`` <- ``renderers``
<- ``pipeline``. A module imports only its own floor or lower ones; no two files import each other in a
loop (imports inside functions count too); no module takes a private (``_name``) from another; the
renderers under ``renderers/`` (``nerf``, ``diffusion``, ``warp``) never import one another, since what they
share lives in ``renderers/*.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"common": 0, "motion": 1, "renderers": 2, "pipeline": 3}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(tree: ast.AST, packages: set[str]) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken) for each import of a project module, wherever it stands."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] in packages]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] in packages
        ):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
    return found


def violations(root: Path, floors: dict[str, int] = FLOORS) -> list[str]:
    """Every broken rule under ``root``, one line each (empty when the code keeps them all)."""
    modules: dict[str, Path] = {}
    for package in floors:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(path, root)] = path
    problems: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        where = f"{path.relative_to(root)}"
        for line, target, names in project_imports(tree, set(floors)):
            for taken in names or [None]:
                full = f"{target}.{taken}" if taken and f"{target}.{taken}" in modules else target
                top, own = full.split(".")[0], name.split(".")[0]
                if floors[top] > floors[own]:
                    problems.append(
                        f"{where}:{line}: {own} (floor {floors[own]}) imports {full} (floor {floors[top]})"
                    )
                if taken and taken.startswith("_") and full == target:
                    problems.append(f"{where}:{line}: takes the private name {taken} from {target}")
                parts, other = name.split("."), full.split(".")
                if own == "renderers" == top and len(parts) > 2 and len(other) > 2 and parts[1] != other[1]:
                    problems.append(
                        f"{where}:{line}: renderer {parts[1]} imports renderer {other[1]} ({full})"
                    )
                if full in modules and full != name and not name.startswith(full + "."):
                    graph[name].add(full)
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop per strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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
                loops.append([*sorted(group), min(group)])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return loops


def test_the_project_keeps_the_import_rules():
    problems = violations(ROOT)
    assert not problems, "import rules broken:\n" + "\n".join(problems)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {**{f"{p}/__init__.py": "" for p in FLOORS}, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BROKEN_TREES = {
    "a higher floor": (
        {"motion/a.py": "from pipeline.b import x\n", "pipeline/b.py": "x = 1\n"},
        "motion (floor 1) imports",
    ),
    "a leaf that imports the project, inside a function": (
        {"common/a.py": "def f():\n    import motion.b\n", "motion/b.py": ""},
        "common (floor 0) imports",
    ),
    "a private name": (
        {"motion/a.py": "from motion.b import _hidden\n", "motion/b.py": "_hidden = 1\n"},
        "private name _hidden",
    ),
    "a sibling renderer": (
        {
            "renderers/nerf/__init__.py": "",
            "renderers/nerf/a.py": "from renderers.warp.b import x\n",
            "renderers/warp/__init__.py": "",
            "renderers/warp/b.py": "x = 1\n",
        },
        "renderer nerf imports renderer warp",
    ),
    "a cycle through a function-level import": (
        {
            "motion/a.py": "from motion.b import y\nx = 1\n",
            "motion/b.py": "def f():\n    from motion.a import x\n",
        },
        "import cycle: motion.a -> motion.b -> motion.a",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_TREES))
def test_each_rule_is_caught(tmp_path, case):
    files, expected = BROKEN_TREES[case]
    problems = violations(write_tree(tmp_path, files))
    assert any(expected in p for p in problems), problems


def test_a_tree_that_keeps_the_rules_passes(tmp_path):
    files = {
        "common/errors.py": "",
        "motion/a.py": "from common.errors import x\n",
        "renderers/base.py": "from motion.a import y\n",
        "renderers/nerf/__init__.py": "",
        "renderers/nerf/r.py": "from renderers.base import z\nfrom renderers.nerf import q\n",
        "pipeline/c.py": "import renderers.nerf.r\nfrom motion import a\n",
    }
    assert violations(write_tree(tmp_path, files)) == []


def test_single_portrait_generation_loads_no_trained_renderer():
    """``generate`` with the warp renderer must not pay for importing the NeRF or diffusion stacks."""
    import subprocess
    import sys

    code = (
        "import sys, pipeline.oneshot, pipeline.cli; "
        "print(' '.join(m for m in sys.modules if m.startswith(('renderers.nerf', 'renderers.diffusion', "
        "'diffusers', 'nerfacc'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
