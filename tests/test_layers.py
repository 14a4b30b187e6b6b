"""The layers run one way: telephony (wire formats, adapters) <- voicebot (the runtime) <- models,
benchmarks (the tools). Every module's imports, function-level ones included, are read with
ast; an import upwards or a cycle between modules fails, naming the file and the line."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("telephony", "voicebot", "models", "benchmarks")
RANK = {"telephony": 0, "voicebot": 1, "models": 2, "benchmarks": 2}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (the longest name that is a module of the tree)
    file: str
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
    }


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of the tree a dotted name refers to (a module, or a name inside one)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(source: str, path: Path, known: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):  # every import, at module level or inside a function
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        for name in names:
            target = resolve(name, known)
            found = Import(source, target or "", str(path.relative_to(ROOT)), node.lineno)
            if target is not None and target != source and found not in out:
                out.append(found)
    return out


def all_imports() -> list[Import]:
    known = modules()
    return [i for name, path in known.items() for i in imports_of(name, path, known)]


def upward(imports: list[Import]) -> list[Import]:
    """Imports of a higher layer (the two tool packages are one layer: they may share code)."""
    return [i for i in imports if RANK[i.target.split(".")[0]] > RANK[i.source.split(".")[0]]]


def cycles(imports: list[Import]) -> list[list[Import]]:
    """One cycle through each strongly connected group of modules (Tarjan), as its edges."""
    graph: dict[str, list[Import]] = {}
    for i in imports:
        graph.setdefault(i.source, []).append(i)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for edge in graph.get(node, []):
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    out = []
    for group in groups:  # walk inside the group until a module repeats
        path: list[Import] = []
        node = min(group)
        seen: list[str] = []
        while node not in seen:
            seen.append(node)
            edge = next(e for e in graph[node] if e.target in group)
            path.append(edge)
            node = edge.target
        out.append(path[seen.index(node) :])
    return out


def describe(i: Import) -> str:
    return f"{i.file}:{i.line}: {i.source} imports {i.target}"


def test_no_module_imports_a_higher_layer():
    bad = upward(all_imports())
    assert not bad, "imports against the layers:\n" + "\n".join(map(describe, bad))


def test_no_import_cycle_between_modules():
    found = cycles(all_imports())
    assert not found, "import cycles:\n" + "\n\n".join("\n".join(map(describe, c)) for c in found)


def test_the_checker_finds_an_upward_import_and_a_cycle(tmp_path):
    """The checks themselves: a telephony module importing voicebot inside a function, and two
    modules importing each other, are both reported with file and line."""
    telephony = tmp_path / "telephony"
    telephony.mkdir()
    (telephony / "__init__.py").write_text("")
    (telephony / "a.py").write_text("def f():\n    from voicebot.app import create_app\n")
    (telephony / "b.py").write_text("from telephony import c\n")
    (telephony / "c.py").write_text("import telephony.b\n")
    voicebot = tmp_path / "voicebot"
    voicebot.mkdir()
    (voicebot / "__init__.py").write_text("")
    (voicebot / "app.py").write_text("")
    known = {
        name: path
        for package in ("telephony", "voicebot")
        for path in sorted((tmp_path / package).rglob("*.py"))
        for name in [
            ".".join(path.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__")
        ]
    }
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = [i for name, path in known.items() for i in imports_of(name, path, known)]
    finally:
        ROOT = saved
    (bad,) = upward(found)
    assert (bad.file, bad.line, bad.target) == ("telephony/a.py", 2, "voicebot.app")
    (cycle,) = cycles(found)
    assert {(e.file, e.line) for e in cycle} == {("telephony/b.py", 1), ("telephony/c.py", 1)}
