"""Which package files a ``deltanet`` command loads, read from its import statements with ``ast`` (nothing imported).

Snakemake does not track the modules a job imports, so each rule's inputs are the files of the command it runs
(``workflow/rules/common.smk``): the closure of ``python -m deltanet <command>`` over ``import`` statements, those
inside functions included (they run in the job, e.g. on a GPU only) and those under ``if TYPE_CHECKING:`` excluded.
Imports no statement shows are roots the caller names: the command's module (the ``COMMANDS`` table of
``deltanet/cli/__init__.py``, read with ``ast`` too, so that the commands may use this module) and the
variant modules, which the registry imports by name. ``tests/test_import_graph.py`` compares the closure with the
modules a real command loads.
"""

from __future__ import annotations

import ast
import os
from functools import cache
from pathlib import Path

from deltanet.hashing import config_hash, file_sha256
from deltanet.tasks import TASK_IDS

PACKAGE = "deltanet"
# The task registry imports every task module; a job uses only its own task's (a root of its own).
REGISTRY_EDGES = frozenset((f"{PACKAGE}.tasks", f"{PACKAGE}.tasks.{task}") for task in TASK_IDS)


def module_file(package_dir: Path, module: str) -> Path | None:
    """``deltanet.a.b`` -> ``<package_dir>/a/b.py`` or ``<package_dir>/a/b/__init__.py``; None if neither exists."""
    base = package_dir.joinpath(*module.split(".")[1:])
    candidates = ([base.with_suffix(".py")] if module != PACKAGE else []) + [base / "__init__.py"]
    return next((path for path in candidates if path.is_file()), None)


# Where statements nest (an import is a statement, so expressions need no visit): bodies of functions, classes,
# if/for/while/with/try and their handlers, match cases.
_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def _imports(nodes, in_function: bool = False):
    """``(import statement, inside a function)`` for each import under ``nodes``, not under ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _imports(node.orelse, in_function)
        else:
            function = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for field in _STATEMENT_LISTS:
                yield from _imports(getattr(node, field, ()), function)


@cache
def direct_imports(package_dir: Path, module: str) -> tuple[frozenset[str], frozenset[str]]:
    """``(at import time, inside functions only)``: the package modules ``module`` imports, with their parent
    packages."""
    path = module_file(package_dir, module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    eager, lazy = set(), set()
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError:  # still an input of the jobs that run it; the config checks or the job report the line
        return frozenset(), frozenset()
    for node, in_function in _imports(tree.body):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE:
                prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
                (lazy if in_function else eager).update(p for p in prefixes if module_file(package_dir, p))
    eager.discard(module)
    return frozenset(eager), frozenset(lazy - eager - {module})


def closure(package_dir: Path, roots, ignore=frozenset(), lazy: bool = True) -> set[str]:
    """The modules ``roots`` load (their parent packages included); ``ignore`` holds ``(importer, imported)`` edges
    not to follow (a registry importing every task, when a job uses one); ``lazy=False`` drops function imports."""
    todo = [".".join(root.split(".")[:i]) for root in roots for i in range(1, len(root.split(".")) + 1)]
    seen = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        eager, inside_functions = direct_imports(package_dir, module)
        todo += [m for m in eager | (inside_functions if lazy else set()) if (module, m) not in ignore]
    return seen


def command_roots(command: str) -> list[str]:
    """What ``python -m deltanet <command>`` starts from: the entry point and the command's module."""
    return [f"{PACKAGE}.__main__", command_table()[command][0]]


@cache
def command_table() -> dict[str, tuple[str, str, str]]:
    """``deltanet.cli.COMMANDS`` (sub-command -> module, function, help), read from its source without importing it."""
    tree = ast.parse((Path(__file__).parent / "cli" / "__init__.py").read_text())
    return next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in node.targets))  # fmt: skip


def source_files(package_dir: Path, modules) -> list[str]:
    return sorted(str(module_file(package_dir, m)) for m in modules)


@cache
def files_loaded_by(package_dir: Path, module: str) -> frozenset[str]:
    """The package files importing ``module`` loads (once per module: 144 train jobs share most of their roots)."""
    return frozenset(source_files(package_dir, closure(package_dir, [module], ignore=REGISTRY_EDGES)))


def command_sources(package_dir: Path, command: str, *modules: str) -> list[str]:
    """The package files ``python -m deltanet <command>`` loads, plus ``modules`` (imported by name at run time)."""
    roots = command_roots(command) + list(modules)
    return sorted(frozenset().union(*(files_loaded_by(package_dir, root) for root in roots)))


def train_modules(variant: str, task: str) -> list[str]:
    """The modules a train job imports by name: its variant's and its task's."""
    return [f"{PACKAGE}.variants.{variant}", f"{PACKAGE}.tasks.{task}"]


def train_shared_code_sha256(package_dir: Path, variant: str, task: str) -> str:
    """sha256 of the code a train job runs besides its own variant and task modules (ops, model, training, ...): the
    workflow's ``shared_code`` param (``workflow/rules/common.smk``) and part of a job's identity
    (``deltanet/training/job.py``), so the two always agree."""
    modules = train_modules(variant, task)
    own = set(source_files(package_dir, modules))
    return files_digest(package_dir, tuple(p for p in command_sources(package_dir, "train", *modules) if p not in own))


def files_digest(package_dir: Path, paths: tuple[str, ...]) -> str:
    """sha256 over each file's path inside the package and its content's sha256 (the same wherever the package is);
    computed once per set of files as long as none changed (the train jobs share one or two sets)."""
    stats = [os.stat(path) for path in paths]
    return _digest(package_dir, paths, tuple((st.st_mtime_ns, st.st_size) for st in stats))


@cache
def _digest(package_dir: Path, paths: tuple[str, ...], stamps: tuple) -> str:
    return config_hash([(Path(path).relative_to(package_dir).as_posix(), file_sha256(path)) for path in paths])
