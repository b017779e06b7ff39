"""The layout is a contract: imports point one way (strategies -> trainers -> search_spaces), NNI stays in
search_spaces/spaces/ and strategies/, no module-level import circles, light modules stay light, and the
method registry is the one place that names methods (old class paths included)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from strategies.methods import METHODS, method_of_tuner

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("search_spaces", "trainers", "strategies")
LAYER = {"search_spaces": 0, "trainers": 1, "strategies": 2}  # a package may import only layers below or equal


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path) -> set[str]:
    """Absolute names of everything `path` imports at module level (imports inside functions are deferred)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:  # top-level statements only; TYPE_CHECKING blocks are skipped
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            submodules = [f"{target}.{alias.name}" for alias in node.names if module_path(f"{target}.{alias.name}")]
            found.update(submodules)  # `from package import submodule` imports the submodule
            if len(submodules) < len(node.names):  # ...and names defined in the package need its __init__
                found.add(target)
    return found


def module_path(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


SOURCES = sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))
IMPORTS = {module_name(path): module_level_imports(path) for path in SOURCES}


def test_imports_point_one_way():
    wrong = []
    for module, imports in IMPORTS.items():
        for target in imports:
            top = target.split(".")[0]
            if top in LAYER and LAYER[top] > LAYER[module.split(".")[0]]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_nni_is_imported_only_by_the_spaces_and_strategies():
    allowed = ("search_spaces.spaces", "strategies")
    wrong = [module for module, imports in IMPORTS.items()
             if any(t.split(".")[0] == "nni" for t in imports) and not module.startswith(allowed)]
    assert not wrong, wrong


def test_no_module_level_import_circles():
    graph = {module: {target for target in imports if target in IMPORTS} for module, imports in IMPORTS.items()}
    visiting, done, circles = set(), set(), []

    def visit(module, trail):
        if module in done:
            return
        if module in visiting:
            circles.append(" -> ".join(trail[trail.index(module):] + [module]))
            return
        visiting.add(module)
        for target in sorted(graph[module]):
            visit(target, trail + [module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not circles, circles


def imported_after(statement: str) -> list[str]:
    code = (f"import sys; {statement}; "
            "print([m for m in ('torch', 'timm', 'nni', 'pytorch_lightning', 'torchvision') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"'))


@pytest.mark.parametrize("module", ["search_spaces", "search_spaces.spec", "search_spaces.scopes",
                                    "search_spaces.edits.morphism_ops", "strategies.data", "strategies.settings"])
def test_spec_level_modules_import_no_torch(module):
    assert imported_after(f"import {module}") == []


def test_the_timm_entry_point_needs_only_torch_and_timm():
    loaded = imported_after("import search_spaces.timm_entry")
    assert "timm" in loaded and "nni" not in loaded and "pytorch_lightning" not in loaded


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_packages_import_no_torch(method):
    # NNI's dispatcher imports the tuner's package; trial code loads only in the trial process
    assert "torch" not in imported_after(f"import {METHODS[method].run_trial.__module__}")


@pytest.mark.parametrize("method", sorted(name for name, record in METHODS.items() if record.tuner is not None))
def test_every_class_path_of_a_method_resolves_to_its_tuner(method):
    record = METHODS[method]
    for path in (record.tuner_path, *record.legacy_tuner_paths):
        module, class_name = path.rsplit(".", 1)
        code = (f"import importlib; from strategies.methods import METHODS; "
                f"assert getattr(importlib.import_module({module!r}), {class_name!r}) is METHODS[{method!r}].tuner")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert result.returncode == 0, f"{path}: {result.stderr[-2000:]}"
        assert method_of_tuner(path) is record


def test_an_unknown_strategies_module_still_fails_to_import():
    with pytest.raises(ModuleNotFoundError):
        __import__("strategies.no_such_tuner")


def test_every_config_names_a_registered_tuner_by_its_package_path_or_runs_a_builtin_on_a_settings_file():
    paths = {record.tuner_path for record in METHODS.values()} - {None}
    for config in sorted((REPO / "nni_configs").glob("*.yml")):
        loaded = yaml.safe_load(config.read_text())
        if "name" in loaded["tuner"]:  # NNI's built-in tuner: the sampled method's trial, on its settings file
            assert "-m strategies.trial --settings nni_configs/sampled/" in loaded["trialCommand"], config.name
            continue
        class_name = loaded["tuner"]["className"]
        assert class_name in paths, f"{config.name}: {class_name}"
