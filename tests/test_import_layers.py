"""The package's layers, locked: no import cycle between modules, and the core never imports the
applications built on it. Imports inside functions count too: a lazy import still ties two modules.

The core is the math and its data: configs, the model and its MoE, growth and upcycling, checkpoints,
data, training, FLOPs. The applications use it: the command line, the dashboard, the notebooks' helpers,
plots, experiments, benchmarks, the grader, the pipeline. An edge from the core to an application
would let a page's or a command's needs shape the operators, and is the first step to a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

LAB = Path(__file__).resolve().parents[1] / "lab"
CORE = {"config", "model", "moe", "expert_parallel", "mlp", "fast_linear", "causal_attention", "msg_masks", "growth", "upcycle", "checkpoint", "derive", "data", "train", "flops"}
APPLICATIONS = {"__main__", "cli", "commands", "dashboard", "teach", "plots", "experiments", "bench", "grading", "pipeline",
                "notebooks", "planner"}


def module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The lab modules `name` imports anywhere in its file (a package import counts as the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # `from lab.x import y` imports lab.x.y when that is a module, else the name y of lab.x
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = LAB) -> dict[str, set[str]]:
    names = module_names(root)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def layer_of(name: str) -> str:
    return name.split(".")[1] if "." in name else ""


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    """Edges into an application from anything that is not one (the core, or a shared module below both)."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if layer_of(a) not in APPLICATIONS and layer_of(a) and layer_of(b) in APPLICATIONS)


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_nothing_below_the_applications_imports_one():
    assert upward_edges(import_graph()) == []


def test_every_top_level_module_is_placed_or_shared():
    # A new top-level module or folder must be placed: core, application, or a shared utility below both.
    shared = {"", "errors", "field_rules", "json_input", "yaml_input", "atomic_files", "interrupts", "resources",
              "runs", "run_export", "kv_cache", "generate", "distributed", "verify", "sources", "corpus", "paths", "paper",
              "seeding", "heap"}
    unplaced = {layer_of(name) for name in import_graph()} - CORE - APPLICATIONS - shared
    assert not unplaced, f"place these in CORE, APPLICATIONS or the shared set: {sorted(unplaced)}"


def test_the_operators_rules_know_nothing_of_files_or_of_each_other():
    """growth/ and upcycle/ are rules over tensors: lab.derive runs them on checkpoints or models. The one
    edge to checkpoint/ is upcycle's check, before any work, that a Hugging Face format can hold its
    output (a sliding window fits only Mixtral)."""
    graph = import_graph()
    edges = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                   if layer_of(a) in ("growth", "upcycle") and layer_of(b) in ("growth", "upcycle", "checkpoint", "derive")
                   and layer_of(b) != layer_of(a))
    assert edges == ["lab.upcycle.plan -> lab.checkpoint.hf_config"]


def test_the_checks_catch_a_violation(tmp_path):
    """The checks are live: a copy of a tiny package with a cycle and an upward edge is caught."""
    root = tmp_path / "lab"
    (root / "growth").mkdir(parents=True)
    (root / "dashboard").mkdir()
    (root / "__init__.py").write_text("")
    (root / "growth" / "__init__.py").write_text("")
    (root / "dashboard" / "__init__.py").write_text("")
    (root / "growth" / "plan.py").write_text("def f():\n    from lab.dashboard.page import show\n")
    (root / "dashboard" / "page.py").write_text("from lab.growth import plan\n\ndef show():\n    pass\n")
    graph = import_graph(root)
    assert cycles(graph) == [["lab.dashboard.page", "lab.growth.plan"]]
    assert upward_edges(graph) == ["lab.growth.plan -> lab.dashboard.page"]
