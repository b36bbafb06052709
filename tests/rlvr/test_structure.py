"""The package's shape: no import circle, and each command imports only the roles it uses.

Imports are read from the source (function-level ones too: they run when the function does), so a circle
hidden behind a lazy import is still found.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"rlvr": REPO / "rlvr", "rlvr.rewards": REPO / "rewards", "rlvr.kernels": REPO / "kernels"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def imports_of(module: str) -> set[str]:
    """The project modules `module` imports, anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import rlvr.x.y` names a module; an attribute's owner otherwise
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def closure(module: str, skip: frozenset[str] = frozenset()) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for dep in imports_of(todo.pop()):
            if dep not in seen and dep not in skip:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_import_circle():
    graph = {m: imports_of(m) for m in MODULES}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                circles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # A package's __init__ re-exporting its own modules is not a circle through the package.
    circles = [c for c in circles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_checker_sees_a_circle(tmp_path, monkeypatch):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from rlvr.b import g\n")
    b.write_text("from rlvr.a import f\n")
    monkeypatch.setitem(MODULES, "rlvr.a", a)
    monkeypatch.setitem(MODULES, "rlvr.b", b)
    assert "rlvr.b" in imports_of("rlvr.a") and "rlvr.a" in closure("rlvr.a")


def test_eval_command_imports_no_learner_module():
    # One exception, by nature: `builtin:tiny-char-teacher` is built on first use by SFT, which is the
    # learner's; `rlvr eval` reaches that only for this one model, and only while it is not cached.
    reach = closure("rlvr.evaluate.command", skip=frozenset({"rlvr.models.tiny_teacher"}))
    learner = sorted(m for m in reach if m.startswith("rlvr.learner"))
    assert not learner, f"rlvr eval imports {learner}"


def test_the_configuration_imports_no_torch():
    tree = ast.parse(MODULES["rlvr.config"].read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(n == "torch" or n.startswith("torch.") for n in names)
    assert not any(m.startswith("rlvr.") and m not in ("rlvr.config",) for m in closure("rlvr.config")
                   if "torch" in MODULES[m].read_text())


def test_every_role_folder_is_a_package():
    for folder in (REPO / "rlvr").iterdir():
        if folder.is_dir() and folder.name != "__pycache__":
            assert (folder / "__init__.py").exists(), folder


def _string_rpc(tree: ast.AST) -> list[int]:
    """Lines that call an actor method named by a string (`getattr(handle, name).remote(...)`) or take a
    method's name as a parameter (`method: str`)."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "remote"
                and isinstance(node.func.value, ast.Call) and getattr(node.func.value.func, "id", "") == "getattr"):
            found.append(node.lineno)
        if isinstance(node, ast.arg) and node.arg == "method" and ast.unparse(node.annotation or ast.Name("")) == "str":
            found.append(node.lineno)
    return found


def test_no_method_names_passed_as_strings():
    """Actors are called through typed methods (STYLE.md 3): no string RPC anywhere in the package."""
    found = {m: lines for m, path in MODULES.items() if (lines := _string_rpc(ast.parse(path.read_text())))}
    assert not found, f"string RPC at {found}"
    assert _string_rpc(ast.parse("getattr(a, name).remote(1)\ndef sft(self, method: str): ...")) == [1, 2]


def _attributes_made_outside_init(tree: ast.AST) -> list[str]:
    """`Class.method.attr` for every `self.attr = ...` in a method when `__init__` does not create `attr`
    (dataclasses declare their fields and are skipped)."""
    found = []
    for cls in (n for n in ast.walk(tree)
                if isinstance(n, ast.ClassDef) and not any("dataclass" in ast.unparse(d) for d in n.decorator_list)):
        methods = [f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]

        def stored(f):
            return {n.attr for n in ast.walk(f) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                    and isinstance(n.value, ast.Name) and n.value.id == "self"}

        made = set().union(*(stored(f) for f in methods if f.name == "__init__"))
        found += [f"{cls.name}.{f.name}.{a}" for f in methods if f.name != "__init__" for a in sorted(stored(f) - made)]
    return found


def test_learner_and_sync_attributes_are_created_in_init():
    found = {m: a for m, path in MODULES.items() if m.startswith(("rlvr.learner", "rlvr.sync"))
             and (a := _attributes_made_outside_init(ast.parse(path.read_text())))}
    assert not found, found
    assert _attributes_made_outside_init(ast.parse("class A:\n    def f(self):\n        self.x = 1\n")) == ["A.f.x"]
