"""The house's layers (docs/architecture.md): imports run one way, no private names cross modules.

Every import statement of every module under ``molfuse/`` is read (module level and inside
functions alike: a lazy import is still a dependency) and resolved to a molfuse module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "molfuse"

# layer -> the layers it may import (its own included). Modalities never import each other.
ALLOWED = {
    "base": {"base"},
    "core": {"base", "core"},
    "fusion": {"base", "core", "fusion"},
    "nets": {"base", "core", "nets"},
    "training": {"base", "core", "nets", "training"},
    "evaluation": {"base", "core", "fusion", "evaluation"},
    "modalities": {"base", "core", "fusion", "nets", "training", "evaluation", "modalities"},
    "face": {"base", "core", "fusion", "nets", "training", "evaluation", "modalities", "face"},
}
CORE = {"schedules", "spaces", "pairs", "convert", "models", "sampling", "density", "losses", "plugins"}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "face"  # molfuse/__init__.py: the package's face
    top = parts[1]
    if top in ("base", "errors"):
        return "base"
    if top in CORE:
        return "core"
    if top in ("fusion", "nets", "training", "evaluation", "modalities"):
        return top
    if top in ("campaign", "cli", "__main__"):
        return "face"
    raise AssertionError(f"{module}: no layer assigned; add it to tests/project/test_layers.py and docs/architecture.md")


def module_name(path: Path, root: Path = PKG) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    base = root / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(path: Path, root: Path = PKG) -> list[tuple[int, str, str | None]]:
    """(line, imported molfuse module, imported name or None) for every import in ``path``."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "molfuse"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "molfuse":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub, None) if _is_module(sub, root) else (node.lineno, target, a.name))
    return out


def violations(root: Path = PKG) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        me = module_name(path, root)
        mine = layer(me)
        for line, target, name in imports(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            theirs = layer(target)
            if theirs not in ALLOWED[mine]:
                found.append(f"{where}: {me} ({mine}) imports {target} ({theirs}), a higher layer")
            if mine == theirs == "modalities":
                a, b = me.split(".")[:3], target.split(".")[:3]
                if len(a) > 2 and len(b) > 2 and a[2] != b[2]:
                    found.append(f"{where}: modality {a[2]} imports modality {b[2]}")
            if name is not None and name.startswith("_") and target != me and not name.startswith("__"):
                found.append(f"{where}: {me} imports the private name {name} of {target}")
            private = [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
            if private and target.rpartition(".")[0] != me.rpartition(".")[0] and target.rpartition(".")[0] != me:
                found.append(f"{where}: {me} imports the private module {target} of another package")
    return found


def test_imports_run_one_way_and_no_private_names_cross_modules():
    assert violations() == []


def test_the_check_fails_on_an_upward_import_and_a_private_name(tmp_path):
    root = tmp_path / "molfuse"
    for rel, text in {"__init__.py": "", "errors.py": "", "campaign/__init__.py": "X = 1\n_y = 2\n",
                      "training/__init__.py": "", "training/bad.py": "from ..campaign import X, _y\n",
                      "spaces.py": "import molfuse.training.bad\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    found = violations(root)
    assert any("training.bad (training) imports molfuse.campaign (face)" in v for v in found), found
    assert any("private name _y" in v for v in found), found
    assert any("spaces (core) imports molfuse.training.bad (training)" in v for v in found), found


@pytest.mark.parametrize("module, expected", [("molfuse.errors", "base"), ("molfuse.plugins", "core"),
                                              ("molfuse.campaign.run", "face"),
                                              ("molfuse.modalities.images.net", "modalities")])
def test_layer_map(module, expected):
    assert layer(module) == expected
