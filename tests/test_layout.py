"""The house holds to docs/layout.md: every module in its table, every import downward, no cycle,
no PyTorch where the table says none, an empty package __init__, and one table of settings."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from cifar_resnet import data, paper, settings
from cifar_resnet.fields import DATASETS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cifar_resnet"
# A row of docs/layout.md's table: | layer | `module.py` ... | what it holds | PyTorch |
ROW = re.compile(r"^\| (\d+) \| `(\w+)\.py`[^|]* \| .* \| (yes|no) \|$")
TORCH = {"torch", "torchvision"}


def declared() -> dict[str, tuple[int, bool]]:
    """module -> (layer, whether it may import PyTorch), from docs/layout.md."""
    rows = (ROW.match(line) for line in (ROOT / "docs" / "layout.md").read_text().splitlines())
    return {row[2]: (int(row[1]), row[3] == "yes") for row in rows if row}


def modules() -> dict[str, Path]:
    """Every module of the package and every Python file at the root, by name."""
    found = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {**found, **{path.stem: path for path in ROOT.glob("*.py")}}


def imports(path: Path) -> tuple[set[str], set[str]]:
    """The project modules and the other top-level packages that ``path`` imports, anywhere in it."""
    project, others = set(), set()
    local = set(modules())
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = ([f"{node.module}.{alias.name}" for alias in node.names] if node.module == PACKAGE.name
                     else [node.module])
        else:
            continue
        for name in names:
            top, _, rest = name.partition(".")
            if top == PACKAGE.name:
                project.add(rest.split(".")[0])
            elif top in local:
                project.add(top)
            else:
                others.add(top)
    return project, others


def test_every_module_has_one_row_in_the_layout_table():
    assert sorted(declared()) == sorted(modules())


def test_every_import_runs_downward_so_there_is_no_cycle():
    layers = {name: layer for name, (layer, _) in declared().items()}
    upward = [f"{name} (layer {layers[name]}) imports {imported} (layer {layers[imported]})"
              for name, path in modules().items() for imported in imports(path)[0]
              if layers[imported] >= layers[name]]
    assert upward == []


def test_modules_without_pytorch_import_none_of_it_even_through_others():
    free = [name for name, (_, torch_allowed) in declared().items() if not torch_allowed]
    assert {"sweep", "runfolder", "errors", "paper"} <= set(free)
    for name in free:
        project, others = imports(modules()[name])
        assert not others & TORCH, f"{name} imports PyTorch"
        assert all(not declared()[imported][1] for imported in project), f"{name} imports a module that uses PyTorch"


def test_sweep_py_starts_without_importing_pytorch():
    code = f"import sys, sweep; print(sorted({TORCH!r} & sys.modules.keys()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout == "[]\n", done.stdout + done.stderr


def test_the_package_init_imports_nothing():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)  # the docstring alone


def test_every_flag_has_exactly_one_kind_and_the_tuples_come_from_that_table():
    flags = set(vars(settings.build_parser().parse_args([])))
    assert flags == set(settings.SETTINGS)
    kinds = (settings.RESULT_SETTINGS, settings.HOST_SETTINGS, settings.COMMAND_FLAGS)
    for flag in flags:
        assert sum(flag in names for names in kinds) == 1, flag
    assert set(settings.PRESET_TABLE_SETTINGS) <= set(settings.RESULT_SETTINGS)


def test_the_paper_s_recipe_is_every_recipe_flag_s_default():
    defaults = vars(settings.build_parser().parse_args([]))
    assert {name: defaults[name] for name in paper.RECIPE if name != "model"} == {
        name: value for name, value in paper.RECIPE.items() if name != "model"}
    assert settings.parse_args([]).model == paper.RECIPE["model"]
    assert settings.parse_args(["--epochs", "10"]).milestones == [5.0, 7.5]  # 50% and 75%, as the paper's


def test_the_run_folder_knows_the_data_sets_by_name():
    assert DATASETS == tuple(data.SOURCES)
