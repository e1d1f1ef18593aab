"""The folder tree is the architecture: each layer imports only the layers below it.

Read from the source with :mod:`ast` (nothing is imported). Layers, bottom to top:

1. ``_utils``: arrays and devices, backend, BLAS threads, memory, optional imports, validation;
2. ``_kernels``: arrays and ``xp`` in, arrays out;
3. ``_model`` and ``_anchors``: siblings that never import each other;
4. ``_learning``; 5. ``_fit`` (drivers); 6. ``_estimators``;
7. the public face: ``arn_sklearn``, ``_persistence``, ``onnx``, ``inspection``, ``demo``,
   ``superres``.

Inside one subpackage, modules may import each other (without cycles). A layer's
``__init__.py`` holds a docstring only, so that importing one module of it does not
import the others. Package imports sit at module level (none inside functions: an
optional extra goes through ``_utils._optional.import_optional``), and there is no cycle.
"""

import ast
import shutil
from pathlib import Path

import pytest

import arn_sklearn

PACKAGE_DIR = Path(arn_sklearn.__file__).parent
LAYERS = {
    "_utils": 1,
    "_kernels": 2,
    "_model": 3,
    "_anchors": 3,
    "_learning": 4,
    "_fit": 5,
    "_estimators": 6,
}
PUBLIC = 7
PUBLIC_MODULES = {"", "_persistence", "onnx", "inspection", "demo", "superres"}
# The longest import chain, counted as import_layers.py counts it (every module, chains
# inside a subpackage included).
MAX_CHAIN = 9


def _modules(root):
    """Dotted name (``arn_sklearn.x.y``) -> path of every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("arn_sklearn",) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _group(module):
    """The layer group of a module: a layer subpackage's name, or "" for the public face."""
    parts = module.split(".")[1:]
    return parts[0] if parts and parts[0] in LAYERS else ""


def _rank(module):
    parts = module.split(".")[1:]
    head = parts[0] if parts else ""
    if head in LAYERS:
        return LAYERS[head]
    return PUBLIC if head in PUBLIC_MODULES else None


def _imports(module, path, modules):
    """``(target module, line, inside a function)`` for each package import of ``module``."""
    tree = ast.parse(path.read_text())
    in_function = {
        id(node)
        for func in ast.walk(tree)
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for node in ast.walk(func)
    }
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target != "arn_sklearn" and not target.startswith("arn_sklearn."):
                continue
            while target not in modules and "." in target:  # a name inside a module
                target = target.rsplit(".", 1)[0]
            if target != module:
                found.append((target, node.lineno, id(node) in in_function))
    return found


def layering_violations(root):
    """Every breach of the layering rules in the package at ``root``, as readable lines."""
    modules = _modules(root)
    problems, edges = [], {m: set() for m in modules}
    for module, path in modules.items():
        rank = _rank(module)
        if rank is None:
            problems.append(f"{module}: not in any layer (place it in a layer subpackage)")
            continue
        if path.name == "__init__.py" and _group(module) and _imports(module, path, modules):
            problems.append(f"{module}: a layer's __init__.py must not import anything")
        for target, line, inside in _imports(module, path, modules):
            edges[module].add(target)
            where = f"{module}:{line} imports {target}"
            if inside:
                problems.append(f"{where} inside a function")
            target_rank = _rank(target)
            same_group = _group(target) == _group(module)
            if (
                target_rank is None
                or target_rank > rank
                or (target_rank == rank and not same_group)
            ):
                problems.append(f"{where}, which is not in a layer below")
    problems += [f"import cycle: {' -> '.join(c)}" for c in _cycles(edges)]
    return problems


def _cycles(edges):
    """One cycle through each strongly connected group of modules (depth-first search)."""
    state, stack, cycles = {}, [], []

    def visit(v):
        state[v] = "open"
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == "open":
                cycles.append(stack[stack.index(w) :] + [w])
            elif w not in state:
                visit(w)
        stack.pop()
        state[v] = "done"

    for v in sorted(edges):
        if v not in state:
            visit(v)
    return cycles


def longest_chain(root):
    """The longest import chain of the package at ``root`` (its modules, bottom last)."""
    modules = _modules(root)
    edges = {m: {t for t, _, _ in _imports(m, p, modules)} for m, p in modules.items()}
    memo, open_ = {}, set()

    def chain(v):
        if v not in memo:
            open_.add(v)  # an edge back into the open path (a cycle) is not followed
            memo[v] = [v] + max((chain(w) for w in edges[v] if w not in open_), key=len, default=[])
            open_.discard(v)
        return memo[v]

    return max((chain(m) for m in modules), key=len)


# What the estimators may take from below the drivers: names, rules and plain values,
# never a numerical step (those are the drivers' and the fitted values' methods).
ESTIMATOR_IMPORTS_BELOW_FIT = {
    "_kernels": {"SIMILARITIES", "sparse_top_k"},
    "_anchors": set(),
    "_learning": {
        "StartSpec",
        "TrainingOptions",
        "GRADIENT_PARAMETER_CONSTRAINTS",
        "GRADIENT_SOLVERS",
        "LEARNED_SOLVERS",
        "HISTORY_ATTRIBUTES",
        "history_attributes",
        "fixed_alpha",
    },
    "_model": {
        "FittedLayer",
        "FittedNetwork",
        "DenseAssignment",
        "make_assignment",
        "LINEAR_SOLVERS",
        "as_2d",
        "as_3d",
    },
}


def estimator_imports_beyond_drivers(root):
    """Names the estimators import from below ``_fit`` that are not in the allowed lists."""
    found = []
    for path in sorted((root / "_estimators").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 2 and node.module):
                continue
            allowed = ESTIMATOR_IMPORTS_BELOW_FIT.get(node.module.split(".")[0])
            if allowed is None:
                continue
            found += [
                f"{path.name}:{node.lineno} {node.module}.{a.name}"
                for a in node.names
                if a.name not in allowed
            ]
    return found


def test_estimators_only_call_drivers_and_fitted_values():
    assert estimator_imports_beyond_drivers(PACKAGE_DIR) == []


def test_thin_estimator_test_catches_a_kernel_call(package_copy):
    path = package_copy / "_estimators" / "_arn.py"
    path.write_text("from .._kernels._lifting import lift\n" + path.read_text())
    assert estimator_imports_beyond_drivers(package_copy) == ["_arn.py:1 _kernels._lifting.lift"]


def test_package_respects_the_layers():
    assert layering_violations(PACKAGE_DIR) == []


def test_import_chain_is_short():
    chain = longest_chain(PACKAGE_DIR)
    assert len(chain) <= MAX_CHAIN, " -> ".join(chain)


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package's source, to break on purpose."""
    root = tmp_path / "arn_sklearn"
    shutil.copytree(PACKAGE_DIR, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_copy_is_clean(package_copy):
    assert layering_violations(package_copy) == []


@pytest.mark.parametrize(
    "path, source, expected",
    [
        # A low layer importing a high one.
        (
            "_utils/_bad.py",
            "from .._estimators._arn import ARNRegressor\n",
            "arn_sklearn._utils._bad:1 imports arn_sklearn._estimators._arn, which is not in",
        ),
        # Siblings of one layer.
        (
            "_model/_bad.py",
            "from .._anchors import _kplane\n",
            "imports arn_sklearn._anchors._kplane, which is not in a layer below",
        ),
        # A package import hidden in a function.
        (
            "_kernels/_bad.py",
            "def f():\n    from .._utils import _memory\n    return _memory\n",
            "arn_sklearn._kernels._bad:2 imports arn_sklearn._utils._memory inside a function",
        ),
        # A module outside every layer.
        ("_helpers.py", "X = 1\n", "arn_sklearn._helpers: not in any layer"),
        # A layer's __init__ that imports.
        ("_fit/__init__.py", "from ._dask import accumulate\n", "must not import anything"),
        # A cycle inside one subpackage.
        ("_kernels/_bad.py", "from ._bad2 import g\n", "import cycle"),
    ],
)
def test_layering_test_catches(package_copy, path, source, expected):
    (package_copy / path).write_text(source)
    if path == "_kernels/_bad.py" and "_bad2" in source:
        (package_copy / "_kernels/_bad2.py").write_text("from ._bad import f\n")
    problems = layering_violations(package_copy)
    assert any(expected in p for p in problems), problems


def test_longest_chain_counts_a_new_step(package_copy):
    # One more module above the whole chain lengthens it by one.
    before = longest_chain(package_copy)
    (package_copy / "_top.py").write_text(f"import {before[0]}\n")
    assert len(longest_chain(package_copy)) == len(before) + 1
