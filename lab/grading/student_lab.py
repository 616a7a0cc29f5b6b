"""The lab as the student's process sees it: a copy without the functions an assignment asks students to write.

An assignment's visible tests declare `OFF_LIMITS`, names of the lab's own implementations of its
answers: a whole module (`"lab.growth"`) or one function of a module the student still needs
(`"lab.moe.route"`, since `lab.model` builds its MoE layers from `lab.moe`). In the copy, an
off-limits module is a stub whose import raises `OffLimitsError`; an off-limits function is renamed
inside its module (the lab's own code there keeps calling it) and the public name raises
`OffLimitsError` on import or attribute access. The student's process imports only this copy (the
sandbox mounts nothing else of the lab), so `from lab.growth import fpi_in` fails with a message that
says why, and reading the original file from disk is not possible either.

Limit: a function renamed inside a module the student needs still exists in that module under its
private name (`_off_limits_route`): code that goes looking for it there is not stopped, only named in
the source for a reader to see.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import lab

PRIVATE_PREFIX = "_off_limits_"

_ERROR_CLASS = '''
class OffLimitsError(ImportError):
    """A lab implementation the assignment asks students to write themselves."""
'''


def _message(name: str, assignment: str) -> str:
    return (f"{name} is off limits in assignment {assignment}: the question asks you to write it yourself, "
            "not to call the lab's implementation")


def _module_file(root: Path, module: str) -> Path | None:
    """The file of `module` (dotted) under `root`: a package's __init__.py or a module's .py."""
    parts = module.split(".")
    package = root.joinpath(*parts)
    if package.is_dir() and (package / "__init__.py").is_file():
        return package / "__init__.py"
    single = root.joinpath(*parts[:-1], parts[-1] + ".py")
    return single if single.is_file() else None


def _forbid_module(root: Path, module: str, assignment: str) -> None:
    parts = module.split(".")
    package = root.joinpath(*parts)
    stub = _ERROR_CLASS + f"\nraise OffLimitsError({_message(module, assignment)!r})\n"
    if package.is_dir():
        shutil.rmtree(package)
        package.mkdir()
        (package / "__init__.py").write_text(stub)
    else:
        root.joinpath(*parts[:-1], parts[-1] + ".py").write_text(stub)


class _Rename(ast.NodeTransformer):
    def __init__(self, names: set[str]):
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id in self.names and not getattr(node, "is_class_field", False):
            node.id = PRIVATE_PREFIX + node.id
        return node

    def _rename_def(self, node):
        if isinstance(node, ast.ClassDef):  # a dataclass field of the same name is an attribute, not the function
            for statement in node.body:
                targets = statement.targets if isinstance(statement, ast.Assign) else (
                    [statement.target] if isinstance(statement, ast.AnnAssign) else [])
                for target in targets:
                    if isinstance(target, ast.Name):
                        target.is_class_field = True
        self.generic_visit(node)
        if node.name in self.names:
            node.name = PRIVATE_PREFIX + node.name
        return node

    visit_FunctionDef = visit_ClassDef = visit_AsyncFunctionDef = _rename_def

    def visit_alias(self, node: ast.alias) -> ast.alias:  # `from lab.x import route` re-exported here
        if (node.asname or node.name) in self.names:
            node.asname = PRIVATE_PREFIX + (node.asname or node.name)
        return node


def _forbid_functions(path: Path, module: str, names: set[str], assignment: str) -> None:
    tree = _Rename(names).visit(ast.parse(path.read_text()))
    messages = {name: _message(f"{module}.{name}", assignment) for name in sorted(names)}
    guard = _ERROR_CLASS + f'''
_OFF_LIMITS_MESSAGES = {messages!r}


def __getattr__(name):
    if name in _OFF_LIMITS_MESSAGES:
        raise OffLimitsError(_OFF_LIMITS_MESSAGES[name])
    raise AttributeError(f"module {{__name__!r}} has no attribute {{name!r}}")
'''
    path.write_text(ast.unparse(tree) + "\n" + guard)


def build_student_lab(destination: Path, off_limits: list[str], assignment: str) -> Path:
    """Copy the lab into `destination/lab` with `off_limits` taken out; returns `destination` (for sys.path)."""
    source = Path(lab.__file__).resolve().parent
    shutil.copytree(source, destination / "lab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    functions: dict[str, set[str]] = {}
    for name in off_limits:
        if _module_file(destination, name) is not None:
            _forbid_module(destination, name, assignment)
            continue
        module, _, function = name.rpartition(".")
        if not module or _module_file(destination, module) is None:
            raise ValueError(f"OFF_LIMITS names {name!r}, which is neither a module nor a function of the lab")
        functions.setdefault(module, set()).add(function)
    for module, names in functions.items():
        path = _module_file(destination, module)
        if path is not None:  # a function of a module that is itself off limits is gone already
            _forbid_functions(path, module, names, assignment)
    return destination
