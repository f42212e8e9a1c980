"""The layering of docs/ARCHITECTURE.md ("Layers") holds: `lint-imports` keeps
the import-linter contracts of pyproject.toml, and the bottom layer stays light.

An import that runs up a layer fails here, and no contract may excuse one
(pyproject has no ``ignore_imports`` line: issue 17 removed the last).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports() -> list[str]:
    """The venv's ``lint-imports`` script, or its entry point run by this interpreter."""
    script = Path(sys.executable).with_name("lint-imports")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]


def test_import_contracts_are_kept():
    proc = subprocess.run([*_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "0 broken" in out, out
    # the contracts of issue 17 are the ones checked (a renamed or dropped one is noticed)
    for name in ("Layers: every layer imports only the layers below it",
                 "The core never imports the bundled plugins",
                 "The drgn bridge never imports the crash lab",
                 "No import cycles between the modules of one package"):
        assert f"{name} KEPT" in out, out


def test_no_import_is_excused():
    """The contracts hold with no exception: the built-in plugin registers the
    renderers because render/ sits below the plugin system (issue 17)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["contracts"], config
    for contract in config["contracts"]:
        assert not contract.get("ignore_imports"), contract["name"]


def test_contracts_layer_pulls_in_no_third_party_library():
    """Any layer may import ``contracts``: importing it must not drag drgn, rich or pluggy along."""
    code = ("import sys, tsubaki_forensics.contracts as c; "
            "print(sorted(m for m in ('drgn', 'rich', 'pluggy', 'typer', 'numpy', 'zstandard') if m in sys.modules)); "
            "print(c.Need.REGISTERS == 'registers', c.EventKind.HAND_BACK == 'hand-back')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True True"


def test_moved_names_are_the_same_objects_at_their_old_homes():
    """Plugins import ``Need`` from ``analysis`` and ``safe_text`` from ``cli.output``: still there."""
    from tsubaki_forensics import analysis, contracts
    from tsubaki_forensics.analysis import spec
    from tsubaki_forensics.cli import output
    from tsubaki_forensics.render import safe

    assert analysis.Need is spec.Need is contracts.Need
    from tsubaki_forensics.analysis import report, results
    from tsubaki_forensics.contracts import report as contract_report, results as contract_results

    assert analysis.AnalysisResult is results.AnalysisResult is contract_results.AnalysisResult
    assert report.Report is contract_report.Report and report.DumpSummary is contract_report.DumpSummary
    assert output.safe_text is safe.safe_text
    assert output.safe_text("a\x1b[31mb") == "a\\x1b[31mb"


def test_the_protocols_describe_the_real_dumps_and_sources(tsubaki_sample_dump):
    """The contracts' Protocols say what the bridge relies on: the shipped real dump and
    the built-in memory sources have it (``runtime_checkable``: the attributes are there)."""
    from monitor_model.sources import BytesSource

    from tsubaki_forensics.contracts import Dump, MemoryRange, MemorySource, MemoryView

    dump = tsubaki_sample_dump
    assert isinstance(dump, Dump)
    assert isinstance(dump.memory, MemoryView)
    ranges = dump.memory.ranges()
    assert ranges and all(isinstance(r, MemoryRange) for r in ranges)
    first = ranges[0]
    assert len(dump.memory.read(first.start, 16)) == 16
    with BytesSource(bytes(4096), vmcoreinfo=b"OSRELEASE=x\n") as source:
        assert isinstance(source, MemorySource)
    assert not isinstance(object(), Dump) and not isinstance(object(), MemorySource)


def _function_level_imports(path: Path, module: str, package: str):
    """(line, target) of every project import inside a function of ``path``."""
    import ast

    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, [target, *(f"{target}.{a.name}" for a in node.names)]


def test_no_function_level_import_hides_a_cycle():
    """Issue 17: an import inside a function must not be the one edge that closes a cycle.

    For every ``from X import ...`` inside a function, the imported module
    must not import (directly or not) the module doing the import.
    """
    import grimp

    roots = {"tsubaki_forensics": ROOT / "tsubaki_forensics", "monitor_model": ROOT / "monitor_model",
             "tsubaki_plugins": ROOT / "plugins" / "tsubaki_plugins"}
    graph = grimp.build_graph(*roots, exclude_type_checking_imports=True)
    cycles = []
    for root, base in roots.items():
        for path in sorted(base.rglob("*.py")):
            parts = [root, *path.relative_to(base).with_suffix("").parts]
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
            for line, targets in _function_level_imports(path, module, package):
                for target in targets:
                    if target in graph.modules and target != module:
                        chain = graph.find_shortest_chain(importer=target, imported=module)
                        if chain:
                            cycles.append(f"{module}:{line} -> {target} (back: {' -> '.join(chain)})")
    assert cycles == []
