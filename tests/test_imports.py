"""The package's import graph: no cycle, counting imports inside functions too."""

import ast
import os

import recbole_lsc

PACKAGE_DIR = os.path.dirname(recbole_lsc.__file__)
# imports allowed inside functions: optional or slow packages only a few code paths need, and the
# deployment commands (they need the optional serve extra: fastapi, uvicorn, httpx)
LAZY_ALLOWED = {"peft", "ray", "uvicorn", "recbole_lsc.deployment"}


def lazily_allowed(module):
    return any(module == allowed or module.startswith(allowed + ".") for allowed in LAZY_ALLOWED)


def module_files():
    for root, _, names in os.walk(PACKAGE_DIR):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                parts = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].split(os.sep)
                yield (".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)), path


MODULES = dict(module_files())


def imported_modules(tree):
    """``(module, inside a function)`` for every import statement of ``tree``."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, nested))
                found.extend((f"{child.module}.{alias.name}", nested) for alias in child.names
                             if f"{child.module}.{alias.name}" in MODULES)
            visit(child, nested)

    visit(tree, False)
    return found


def graph():
    edges = {}
    for name, path in MODULES.items():
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        edges[name] = {module for module, _ in imported_modules(tree) if module in MODULES and module != name}
    return edges


def find_cycle(edges):
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_function_level_imports_are_only_optional_packages():
    lazy = {}
    for name, path in MODULES.items():
        with open(path, encoding="utf-8") as handle:
            modules = {module for module, nested in imported_modules(ast.parse(handle.read())) if nested}
        if not all(lazily_allowed(module) for module in modules):
            lazy[name] = sorted(modules)
    assert not lazy


def test_the_deployment_is_visible_in_the_folders():
    folders = {name.split(".")[1] for name in MODULES if name.count(".") >= 2}
    assert {"cloud", "device", "evaluation", "experiment", "leaderboard"} <= folders
    cloud = graph()
    for name, imports in cloud.items():  # the cloud never reads device code, nor the device cloud code
        if name.startswith("recbole_lsc.cloud."):
            assert not any(module.startswith("recbole_lsc.device.") for module in imports), name
        if name.startswith("recbole_lsc.device."):
            assert not any(module.startswith("recbole_lsc.cloud.") for module in imports), name
