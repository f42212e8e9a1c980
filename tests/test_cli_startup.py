"""Start-up (issue 21): light commands import nothing heavy; the lazy command table stays true.

Not a timing test: what a command imports is checked, in a fresh
interpreter per command line (``sys.modules`` at exit).  The times are in
docs/BENCHMARKS.md ("Start-up", ``bench/startup_bench.py``).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import pytest
import typer

from tsubaki_forensics.cli.examples import EXAMPLES
from tsubaki_forensics.cli.root import BUILTIN_COMMANDS, LazyCommands, _typer
from tsubaki_forensics.plugin_system import Plugins
from tsubaki_forensics.plugin_system.discovery import OWN_DISTRIBUTION, foreign_entry_points

# What no help or version line needs: drgn and its helpers, numpy, rich, zstandard,
# the ELF and codec libraries, plotting, and the plugins themselves.
HEAVY = {"drgn", "_drgn", "numpy", "rich", "zstandard", "matplotlib", "elftools", "xxhash", "lz4", "cramjam",
         "lzokay", "tsubaki_plugins", "monitor_model", "dask"}

_PROBE = (
    "import sys, json\n"
    "from tsubaki_forensics.cli.app import main\n"
    "rc = main(sys.argv[1:])\n"
    "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + '\\n')\n"
    "sys.exit(rc)\n"
)


def imported_by(*args: str, env: dict | None = None) -> tuple[set[str], subprocess.CompletedProcess]:
    """Top-level and full names of the modules a fresh interpreter holds after ``tsubaki-forensics ARGS``."""
    run = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    modules = json.loads(run.stderr.rsplit("\nMODULES ", 1)[1])
    return {m.split(".")[0] for m in modules} | set(modules), run


# ``analyze --help`` lists the options the analyses declare (issue 17), so it loads the plugins.
PLUGIN_HELP = {"analyze"}
LIGHT = [["--version"], ["-V"], ["--help"], ["-h"],
         *[[*path.split(), "--help"] for path in sorted(EXAMPLES) if path not in PLUGIN_HELP]]


@pytest.mark.parametrize("args", LIGHT, ids=" ".join)
def test_light_commands_import_nothing_heavy(args):
    modules, run = imported_by(*args)
    assert run.stdout
    assert not modules & HEAVY, f"{' '.join(args)} imported {sorted(modules & HEAVY)}"
    assert "tsubaki_forensics.plugin_system.manager" not in modules, "plugins loaded for a help line"
    # nor the plugin machinery or the number tower (a few ms each, of a 0.15 s budget)
    assert not modules & {"pluggy", "decimal", "importlib.metadata"}, sorted(modules & {"pluggy", "decimal",
                                                                                    "importlib.metadata"})
    if args[0] in ("--version", "-V"):
        assert "typer" not in modules and "typing" not in modules, sorted(modules)


def test_analyze_help_loads_the_plugins_for_their_options():
    modules, run = imported_by("analyze", "--help")
    assert "--tail" in run.stdout  # declared by the dmesg analysis
    assert "tsubaki_plugins" in modules and "rich" not in modules


def test_a_real_command_still_loads_what_it_uses(tmp_path):
    """The check above is not vacuous: ``plugins`` loads pluggy plugins (and their drgn)."""
    modules, run = imported_by("plugins", "-f", "json")
    assert {"tsubaki_plugins", "drgn", "tsubaki_forensics.plugin_system.manager"} <= modules
    assert "tasks" in json.loads(run.stdout)["analyses"]


def test_builtin_command_table_matches_the_modules():
    """:data:`BUILTIN_COMMANDS` names every command each module registers, and nothing else."""
    found: dict[str, str] = {}
    for module_name in dict.fromkeys(BUILTIN_COMMANDS.values()):
        app = _typer()
        importlib.import_module(f"tsubaki_forensics.cli.{module_name}").register(app)
        names = [i.name or typer.main.get_command_name(i.callback.__name__) for i in app.registered_commands]
        names += [g.name for g in app.registered_groups]
        for name in names:
            assert name not in found, f"{name} registered by {found[name]} and {module_name}"
            found[name] = module_name
    assert found == BUILTIN_COMMANDS
    assert set(found) == {path.split()[0] for path in EXAMPLES}


def test_root_lists_then_converts_on_demand():
    group = typer.main.get_command(_root_app())
    assert isinstance(group, LazyCommands) and not group.commands
    assert group.list_commands(None)[: len(BUILTIN_COMMANDS)] == list(BUILTIN_COMMANDS)
    assert not group.commands, "listing converted commands"
    assert group.get_command(None, "verify").name == "verify"
    assert list(group.commands) == ["verify"]
    assert group.get_command(None, "no-such-command") is None


def _root_app():
    from tsubaki_forensics.cli.root import build_app

    return build_app([])


def test_bundled_plugins_add_no_commands():
    """Why the root help may skip loading plugins when only the bundled ones are installed."""
    for info in Plugins.load().plugins():
        if info.distribution == OWN_DISTRIBUTION:
            assert "tsubaki_register_commands" not in info.hooks, info.name
    assert foreign_entry_points() == [] or all(d != "tsubaki-forensics" for d in foreign_entry_points())


COMMAND_PLUGIN = """
import typer
from tsubaki_forensics.plugin_system import hookimpl

@hookimpl
def tsubaki_register_commands(app):
    @app.command("hello-plugin")
    def hello(name: str = "world"):
        '''Say hello from a third-party plugin.'''
        print(f"hello {name}")
"""


def test_a_foreign_plugin_command_is_listed_and_runs(tmp_path):
    info = tmp_path / "fake_cmd_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-cmd-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tsubaki_forensics]\nhello = fake_tsubaki_cmd\n")
    (tmp_path / "fake_tsubaki_cmd.py").write_text(textwrap.dedent(COMMAND_PLUGIN))
    assert foreign_entry_points(path=[str(tmp_path)]) == ["fake-cmd-plugin"]
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    modules, run = imported_by("--help", env=env)
    assert "hello-plugin" in run.stdout and "Say hello from a third-party plugin." in run.stdout
    assert "fake_tsubaki_cmd" in modules
    _, run = imported_by("hello-plugin", "--name", "tsubaki", env=env)
    assert run.stdout == "hello tsubaki\n"
    modules, run = imported_by("verify", "--help", env=env)
    assert "fake_tsubaki_cmd" not in modules, "a built-in command's help loaded plugins"


# What ``analyze`` of a ``.tsd`` leaves out although its package is imported (issue 21):
# the contracts it does not use (``contracts/__init__`` loads each name on first use)
# and the foreign-format readers (the built-in reassembly sends a ``.tsd`` to its reader).
NOT_IN_ANALYZE = {"tsubaki_forensics.contracts.events", "tsubaki_forensics.contracts.sources",
                  "tsubaki_forensics.contracts.collect", "tsubaki_forensics.contracts.inspect",
                  "tsubaki_forensics.contracts.triage", "tsubaki_forensics.vmcore.foreign",
                  "tsubaki_forensics.vmcore.kdump", "tsubaki_forensics.vmcore.elf"}


def test_analyze_imports_only_what_it_uses(tsubaki_sample_path):
    modules, run = imported_by("analyze", str(tsubaki_sample_path), "--format", "json", "--only", "sys")
    assert [a["name"] for a in json.loads(run.stdout)["analyses"]] == ["sys"]
    assert {"tsubaki_forensics.contracts.analysis", "tsubaki_forensics.contracts.results"} <= modules
    assert not modules & NOT_IN_ANALYZE, sorted(modules & NOT_IN_ANALYZE)
