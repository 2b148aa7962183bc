"""The package's rooms keep their layer order, and no module uses another's private names.

The layer order is the table in README.md's "Architecture" section (between the
``<!-- layers -->`` markers): a module may import a module of a lower layer, or of its own room,
never a higher layer or another room of the same layer. Lazy imports inside functions count.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "pipelines"


def layer_order(readme: str) -> dict[str, int]:
    """Room -> layer, from the README's layer table (``| 3 | `loader` | ...``)."""
    found = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", readme, re.S)
    assert found, "README.md has no <!-- layers --> table"
    layers: dict[str, int] = {}
    for line in found.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        for room in re.findall(r"`([\w.]+)`", cells[1]):
            layers[room] = int(cells[0])
    return layers


def room_of(module: str) -> str:
    """``pipelines.ingest.run`` -> ``ingest``; ``pipelines`` (its __init__) -> ``pipelines``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pipelines"


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported pipelines module, names taken from it) for every import in the tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pipelines":
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] == "pipelines":
                yield node.lineno, target, [a.name for a in node.names]


def is_module(name: str, base: Path) -> bool:
    for folder in (base, REPO):
        path = folder.joinpath(*name.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return True
    return False


def violations(readme: str, root: Path = PACKAGE) -> list[str]:
    layers = layer_order(readme)
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root.parent)
        room = room_of(module)
        if room not in layers:
            found.append(f"{module}: room {room!r} is not in the README's layer table")
            continue
        tree = ast.parse(path.read_text(), str(path))
        private_names: set[str] = set()  # local names bound to pipelines modules
        for line, target, names in imports(tree, module, path.name == "__init__.py"):
            for name in names:
                if is_module(f"{target}.{name}", root.parent):  # `from pipelines.lake import delta`
                    private_names.add(name)
                    taken = f"{target}.{name}"
                else:
                    taken = target
                    if name.startswith("_") and not name.startswith("__"):
                        found.append(f"{module}:{line}: imports private {target}.{name}")
                _check_layer(found, layers, module, room, line, taken)
            if not names:
                _check_layer(found, layers, module, room, line, target)
        for node in ast.walk(tree):  # `delta._location(...)`: another module's private name
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in private_names
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{module}:{node.lineno}: uses private {node.value.id}.{node.attr}")
    return found


def _check_layer(
    found: list[str], layers: dict[str, int], module: str, room: str, line: int, target: str
) -> None:
    other = room_of(target)
    if other == room:
        return
    if other not in layers:
        found.append(f"{module}:{line}: imports {target}, whose room is not in the layer table")
    elif layers[other] >= layers[room]:
        found.append(
            f"{module}:{line}: imports {target} (layer {layers[other]}, {other}) from layer "
            f"{layers[room]} ({room})"
        )


def test_every_import_points_down_the_layers_and_no_private_name_crosses_a_module() -> None:
    readme = (REPO / "README.md").read_text()
    assert violations(readme) == []


def test_the_check_sees_a_higher_layer_and_a_private_name(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    lake = tmp_path / "pipelines" / "lake"
    lake.mkdir(parents=True)
    (tmp_path / "pipelines" / "__init__.py").write_text("")
    (lake / "__init__.py").write_text("")
    (lake / "bad.py").write_text(
        "from pipelines.ingest.run import run_ingest\n"
        "from pipelines.storage import arrowfs\n"
        "from pipelines.config import _seconds\n"
        "def f():\n"
        "    from pipelines.cli import main\n"
        "    return arrowfs._private()\n"
    )
    found = "\n".join(violations(readme, tmp_path / "pipelines"))
    assert "imports pipelines.ingest.run" in found
    assert "imports pipelines.cli" in found
    assert "imports private pipelines.config._seconds" in found
    assert "uses private arrowfs._private" in found
    assert "pipelines.storage" not in found.replace("arrowfs._private", "")


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            "| 0 | `errors`, `columns` | x |\n| 2 | `storage` | y |",
            {"errors": 0, "columns": 0, "storage": 2},
        )
    ],
)
def test_layer_table_is_read_from_the_readme(table: str, expected: dict[str, int]) -> None:
    assert layer_order(f"<!-- layers -->\n{table}\n<!-- /layers -->") == expected
