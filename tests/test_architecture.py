"""The package's shape: no import cycles, registries that load heavy libraries only when needed, a start-up
that does not load torch, and no top-level module without a reason."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kdrun"
# The top level holds the entry point, the one module that knows the order of the stages, and what every
# layer shares (the errors users see, whole-or-nothing writes, the registry class, progress of long work);
# the rest is in packages.
TOP_LEVEL = {"__init__", "cli", "pipeline", "errors", "atomic_files", "registry", "progress"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """{module: the kdrun modules it imports}, read from the source (imports inside functions included)."""
    modules = module_names()

    def owner(name: str) -> str | None:  # `kdrun.models.build_model` -> `kdrun.models`
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {owner(alias.name) for alias in node.names if alias.name.startswith("kdrun")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                if base.startswith("kdrun"):
                    for alias in node.names:  # `from kdrun.losses import functional` imports a module
                        full = f"{base}.{alias.name}"
                        edges.add(full if full in modules else owner(base))
        graph[name] = edges - {None, name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for neighbour in graph.get(node, ()):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_kdrun_imports_itself_in_a_circle():
    graph = import_graph()
    assert len(graph) > 60 and graph["kdrun.pipeline"]  # the walk sees the package
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_top_level_module_without_a_reason():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL


def test_packages_never_import_the_pipeline_or_the_command():
    """Only the command imports the pipeline; nothing below imports either (no call back up)."""
    graph = import_graph()
    for name, edges in graph.items():
        if name not in ("kdrun.cli",):
            assert "kdrun.pipeline" not in edges and "kdrun.cli" not in edges, name


def test_the_pure_layers_import_no_training_plumbing():
    """losses/, metrics/ and models/ are tensors in, tensors out: no engine, data, teachers or pipeline."""
    forbidden = ("kdrun.engine", "kdrun.data", "kdrun.teachers", "kdrun.pipeline", "kdrun.evaluation", "kdrun.jobs")
    for name, edges in import_graph().items():
        if name.startswith(("kdrun.losses", "kdrun.metrics", "kdrun.models")):
            assert not [edge for edge in edges if edge.startswith(forbidden)], name


def _imports_after(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_command_and_the_config_checks_start_without_torch():
    loaded = _imports_after("import kdrun.cli, kdrun.config.checks, kdrun.config.roles, kdrun.jobs.sweep_recorder")
    assert "torch" not in loaded and "lightning" not in loaded


def test_torchvisions_zoo_loads_only_when_one_of_its_models_is_built():
    loaded = _imports_after(
        "import sys\n"
        "from kdrun.models import MODELS, build_model\n"
        "lazy = ('resnet18', 'resnet50', 'mobilenet_v2')\n"
        "assert all(name in MODELS and not MODELS.is_loaded(name) for name in lazy)\n"
        "assert 'torchvision' not in sys.modules and 'kdrun.models.torchvision_models' not in sys.modules\n"
        "build_model({'name': 'resnet18', 'num_classes': 10}, (3, 32, 32), 'teacher')\n"
        "assert all(MODELS.is_loaded(name) for name in lazy)")
    assert "kdrun.models.torchvision_models" in loaded


def test_a_lazy_registry_entry_names_its_module_and_a_typo_lists_every_entry():
    from kdrun.errors import ConfigError
    from kdrun.registry import Registry

    registry = Registry("thing", "thing.name")
    registry.register_lazy(["far"], "kdrun.no_such_module")
    registry.register("near")(object)
    assert registry.names() == ["far", "near"] and "far" in registry and not registry.is_loaded("far")
    with pytest.raises(ModuleNotFoundError, match="kdrun.no_such_module"):
        registry.get("far")
    with pytest.raises(ConfigError, match=r"thing.name='nera' is unknown; allowed: far, near"):
        registry.get("nera")
