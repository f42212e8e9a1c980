"""One test per hook of hookspecs.py, each with a small plugin class registered on a fresh manager."""

from __future__ import annotations

import io
import shutil
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tsubaki_forensics.analysis import AnalysisContext, AnalysisOption, AnalysisResult, Need, run_analyses, select
from tsubaki_forensics.analysis.report import DumpSummary, Report
from tsubaki_forensics.analysis.session import open_program
from tsubaki_forensics.contracts import DebugInfoKind, DebugInfoProvider, DebugInfoReport
from tsubaki_forensics.contracts.debuginfo import DEBUG_INFO_TIMEOUT_S, TIMEOUT_ENV, provider_time_limit
from tsubaki_forensics.errors import DebugInfoError, PluginError, TsubakiError
from tsubaki_forensics.plugin_system import Plugins, hookimpl
from tsubaki_forensics.selfcontained.provider import BtfProvider
from tsubaki_forensics.tsd import TsdWriter

VMCOREINFO = (
    b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82000000\n"
    b"NUMBER(phys_base)=0\nKERNELOFFSET=0\nBUILD-ID=00112233445566778899\n"
)

TRUE = Path(shutil.which("true") or "/bin/true")  # an ELF file of no kernel's build


@pytest.fixture
def plugins():
    """A fresh manager (built-ins only) per test."""
    return Plugins.load(entry_points=False)


@pytest.fixture
def register(plugins):
    """register(obj, name): registered for this test, always unregistered after."""
    names = []

    def add(obj, name):
        plugins.pm.register(obj, name=name)
        names.append(name)
        return obj

    yield add
    for name in names:
        plugins.pm.unregister(name=name)


@pytest.fixture
def tiny_tsd(tmp_path):
    path = tmp_path / "tiny.tsd"
    with TsdWriter(path) as w:
        w.write_metadata(vmcoreinfo=VMCOREINFO)
        w.write_memory(0x1000, b"\x5a" * 4096)
    return path


def test_hook_tsubaki_register_sources(plugins, register):
    class SourceType:
        name, description = "fake", "a fake source"

        @staticmethod
        def open(spec):
            return ("opened", spec)

        @staticmethod
        def probe(spec):
            return spec.startswith("fake:")

    class Plugin:
        @hookimpl
        def tsubaki_register_sources(self, register):
            register("three", lambda spec, **options: ("three", spec, options), "three values")
            register(SourceType())

    register(Plugin(), "src")
    sources = plugins.sources()
    assert sources["three"].factory("x", level=3) == ("three", "x", {"level": 3})
    assert sources["three"].plugin == "src"
    assert sources["fake"].factory("fake:1") == ("opened", "fake:1")
    assert sources["fake"].probe("fake:1") and not sources["fake"].probe("other")


def test_register_sources_rejects_duplicates(plugins, register):
    class One:
        @hookimpl
        def tsubaki_register_sources(self, register):
            register("same", lambda spec: None, "one")

    class Two:
        @hookimpl
        def tsubaki_register_sources(self, register):
            register("same", lambda spec: None, "two")

    register(One(), "one")
    register(Two(), "two")
    with pytest.raises(PluginError, match="'same', already registered"):
        plugins.sources()


def test_hook_tsubaki_reassemble(plugins, register, tiny_tsd, tmp_path):
    sentinel = object()

    class Plugin:
        @hookimpl
        def tsubaki_reassemble(self, paths):
            return sentinel if paths[0].suffix == ".fake" else None

    register(Plugin(), "fake-format")
    assert plugins.reassemble([tmp_path / "x.fake"]) is sentinel
    dump = plugins.reassemble([tiny_tsd])  # the built-in open_dump, tried last
    try:
        assert dump.vmcoreinfo == VMCOREINFO
        assert dump.memory.read(0x1000, 2) == b"\x5a\x5a"
    finally:
        dump.close()


def test_reassemble_without_any_plugin_is_an_error(tmp_path):
    plugins = Plugins.load(disable=["builtin"], entry_points=False)
    with pytest.raises(PluginError, match="no plugin could open"):
        plugins.reassemble([tmp_path / "x.tsd"])


def test_hook_tsubaki_debug_info_paths(plugins, register, tmp_path):
    seen = []

    class Plugin:
        @hookimpl
        def tsubaki_debug_info_paths(self, build_id, release):
            seen.append((build_id, release))
            return [tmp_path / "vmlinux-a", str(tmp_path / "dir")]

    register(Plugin(), "debug")
    paths = plugins.debug_info_paths("abcd", "6.1.0")
    assert paths == [tmp_path / "vmlinux-a", tmp_path / "dir"]
    assert seen == [("abcd", "6.1.0")]


def test_hook_tsubaki_register_debug_info(plugins, register, tiny_tsd):
    """A third party's provider (a symbol server) takes its place in the chain by ``order``."""
    seen = []

    class SymbolServer:
        name = "symbol-server"
        description = "types from the company symbol server"
        order = 500

        def provide(self, request):
            seen.append((request.build_id, request.release, [p.name for p in plugins.debug_info_providers()]))
            # nothing on disk matches the tiny dump: offering a file is counted, not loaded
            assert request.load_vmlinux([TRUE], self.name) is None
            request.prog.register_type_finder("server", lambda prog, kind, name, filename: None, enable_index=0)
            return DebugInfoReport(DebugInfoKind.SYMBOL_PACK, self.name, summary=("types from the server",))

    class Plugin:
        @hookimpl
        def tsubaki_register_debug_info(self, register):
            register(SymbolServer())

    register(Plugin(), "server")
    opened = open_program([tiny_tsd], plugins)
    try:
        report = opened.program.debug_info
        assert report.provider == "symbol-server" and Need.DEBUG_INFO in opened.program.capabilities
        assert "server" in opened.program.prog.registered_type_finders()
        assert report.lines() == ["types from the server"] and opened.program.vmlinux is None
    finally:
        opened.close()
    # the dump's strings, and the chain in order: the built-ins around the plugin's
    assert seen == [("00112233445566778899", "6.1.0-test", ["vmlinux-files", "lab-kernels", "symbol-server", "btf"])]


def test_debug_info_chain_says_why_each_provider_declined(plugins, register, tiny_tsd):
    class Refuses:
        name, description, order = "refuses", "a provider whose file is of another build", 300

        def provide(self, request):
            assert request.load_vmlinux([TRUE], self.name) is None
            raise DebugInfoError("the server's vmlinux is of another build")

    class Plugin:
        @hookimpl
        def tsubaki_register_debug_info(self, register):
            register(Refuses())

    register(Plugin(), "refuses")
    with pytest.raises(DebugInfoError) as e:
        open_program([tiny_tsd], plugins)
    message = str(e.value)
    assert message.startswith("no vmlinux with debug info found for build id 00112233445566778899")
    assert "(1 candidate(s) did not match)" in message
    assert "; and the server's vmlinux is of another build; and the dump cannot describe itself" in message


class _Attaches:
    """A provider that serves every dump (after the misbehaving one)."""

    name, description, order = "fallback", "types from a fallback server", 500

    def provide(self, request):
        return DebugInfoReport(DebugInfoKind.SYMBOL_PACK, self.name, summary=("types from the fallback",))


class _Hangs:
    """A symbol server that never answers: only the time limit ends it (then the test fails)."""

    name, description, order = "hangs", "a symbol server on a dead network", 300

    def __init__(self, swallow=False):
        self.swallow = swallow

    def provide(self, request):
        for _ in range(600):  # 5 minutes
            try:
                time.sleep(0.5)
            except BaseException:
                if not self.swallow:
                    raise
                break  # swallowed the interruption: returns late (ignoring it for 30 s ends the process)
        return DebugInfoReport(DebugInfoKind.SYMBOL_PACK, self.name)  # late: must not be used


def _chain_plugin(*providers, timeout=None):
    class Plugin:
        @hookimpl
        def tsubaki_register_debug_info(self, register):
            for provider in providers:
                if timeout is None or provider.name == "fallback":
                    register(provider)
                else:
                    register(provider, timeout=timeout)

    return Plugin()


def _debug_info(tiny_tsd, plugins):
    opened = open_program([tiny_tsd], plugins)
    try:
        return opened.program.debug_info
    finally:
        opened.close()


def test_a_hanging_provider_is_passed_over_at_its_time_limit(plugins, register, tiny_tsd):
    """A provider that hangs costs its time limit, is one line naming its plugin, and the chain goes on."""
    register(_chain_plugin(_Hangs(), _Attaches(), timeout=1), "deadnet")
    report = _debug_info(tiny_tsd, plugins)
    assert report.provider == "fallback"
    assert report.passed_over == ("plugin 'deadnet' (debug-info provider 'hangs') ran past its 1 s time limit",)
    assert report.lines()[0] == "not used: " + report.passed_over[0]


def test_a_provider_that_swallows_the_interruption_is_not_used(plugins, register, tiny_tsd):
    register(_chain_plugin(_Hangs(swallow=True), _Attaches(), timeout=1), "stubborn")
    report = _debug_info(tiny_tsd, plugins)
    assert report.provider == "fallback"
    assert report.passed_over == ("plugin 'stubborn' (debug-info provider 'hangs') ran past its 1 s time limit "
                                  "(and ignored the interruption)",)


def test_a_raising_provider_is_one_line_and_the_chain_goes_on(plugins, register, tiny_tsd):
    class Raises:
        name, description, order = "raises", "a symbol server client with a bug", 300

        def provide(self, request):
            raise RuntimeError("connection reset\nsecond line")

    class Exits(Raises):
        name, order = "exits", 301

        def provide(self, request):
            sys.exit(3)

    register(_chain_plugin(Raises(), Exits(), _Attaches()), "buggy")
    report = _debug_info(tiny_tsd, plugins)
    assert report.provider == "fallback"
    assert report.passed_over == (
        "plugin 'buggy' (debug-info provider 'raises') raised RuntimeError: connection reset",
        "plugin 'buggy' (debug-info provider 'exits') called sys.exit(3)",
    )


def test_the_lines_are_in_the_error_when_no_provider_attaches(plugins, register, tiny_tsd):
    register(_chain_plugin(_Hangs(), timeout=1), "deadnet")
    with pytest.raises(DebugInfoError) as e:
        open_program([tiny_tsd], plugins)
    message = str(e.value)
    assert message.startswith("no vmlinux with debug info found for build id 00112233445566778899")
    assert "; and plugin 'deadnet' (debug-info provider 'hangs') ran past its 1 s time limit; and " in message
    assert "\n" not in message


def test_the_users_time_limit_wins(plugins, register, tiny_tsd, monkeypatch):
    """``TSUBAKI_DEBUG_INFO_TIMEOUT`` applies to every provider, over what one declared."""
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    register(_chain_plugin(_Hangs(), _Attaches(), timeout=600), "deadnet")
    report = _debug_info(tiny_tsd, plugins)
    assert report.passed_over == ("plugin 'deadnet' (debug-info provider 'hangs') ran past its 1 s time limit",)
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(TsubakiError, match=f"^{TIMEOUT_ENV}='soon': give the seconds"):
        open_program([tiny_tsd], plugins)


def test_provider_time_limit():
    """Pure: the user's variable, else what the provider declared, else the documented default."""
    assert provider_time_limit(None, {}) == DEBUG_INFO_TIMEOUT_S == 120.0
    assert provider_time_limit(600, {}) == 600
    assert provider_time_limit(0, {}) is None  # 0: no limit
    assert provider_time_limit(600, {TIMEOUT_ENV: "2.5"}) == 2.5
    assert provider_time_limit(None, {TIMEOUT_ENV: "0"}) is None
    for bad in ("-1", "nan", "inf", "x"):
        with pytest.raises(TsubakiError):
            provider_time_limit(None, {TIMEOUT_ENV: bad})


def test_register_debug_info_checks_the_time_limit(plugins, register):
    register(_chain_plugin(_Attaches(), _Hangs(), timeout=-1), "negative")
    with pytest.raises(PluginError, match="timeout must be seconds >= 0"):
        plugins.debug_info_providers()


def test_the_chain_knows_each_providers_plugin_and_limit(plugins, register):
    register(_chain_plugin(_Attaches(), _Hangs(), timeout=30), "mine")
    chain = plugins.debug_info_providers()
    assert [(p.name, p.plugin, p.timeout) for p in chain] == [
        ("vmlinux-files", "builtin", None), ("lab-kernels", "builtin", None), ("hangs", "mine", 30),
        ("fallback", "mine", None), ("btf", "builtin", None)]
    assert all(isinstance(p, DebugInfoProvider) for p in chain)


def test_register_debug_info_validates(plugins, register):
    class Bad:
        name, description, order = "bad", "order is not a number", "first"

        def provide(self, request):
            return None

    class Plugin:
        @hookimpl
        def tsubaki_register_debug_info(self, register):
            register(Bad())

    register(Plugin(), "bad")
    with pytest.raises(PluginError, match="order must be an int"):
        plugins.debug_info_providers()


def test_register_debug_info_rejects_a_second_btf(plugins, register):
    class Plugin:
        @hookimpl
        def tsubaki_register_debug_info(self, register):
            register(BtfProvider())

    register(Plugin(), "twice")
    with pytest.raises(PluginError, match="debug-info provider 'btf', already registered by 'builtin'"):
        plugins.debug_info_providers()


def test_symbol_pack_provider_comes_through_the_entry_point_group():
    """Registered the way a third party's is (pyproject: ``symbol-pack``); a stale install misses it."""
    chain = Plugins.load().debug_info_providers()
    assert [p.name for p in chain] == ["vmlinux-files", "lab-kernels", "symbol-pack", "btf"]


def test_hook_tsubaki_program_ready(plugins, register, tiny_tsd):
    calls = []

    class Plugin:
        @hookimpl
        def tsubaki_program_ready(self, prog, dump):
            calls.append((prog, dump))
            # what such a plugin does: adjust the program before analyses run
            prog.add_memory_segment(0x9000, 16, lambda a, n, o, p: b"\x11" * n, physical=True)

    register(Plugin(), "ready")
    opened = open_program([tiny_tsd], plugins, debug_info=False)
    try:
        assert calls == [(opened.program.prog, opened.dump)]
        assert opened.program.prog.read(0x9000, 2, True) == b"\x11\x11"
    finally:
        opened.close()


def test_hook_tsubaki_register_analyses(plugins, register):
    def count(ctx):
        return AnalysisResult("count", "Count", facts=(("answer", 42),))

    class Plugin:
        @hookimpl
        def tsubaki_register_analyses(self, register):
            register("count", count, "counts things", needs=["debug_info"])

    register(Plugin(), "counter")
    spec = plugins.analyses()["count"]
    assert (spec.plugin, spec.needs, spec.description) == ("counter", frozenset({Need.DEBUG_INFO}), "counts things")
    (result,) = run_analyses(select(plugins.analyses()), AnalysisContext(prog=None))
    assert result.fact("answer") == 42


def test_register_analyses_validates(plugins, register):
    class Plugin:
        @hookimpl
        def tsubaki_register_analyses(self, register):
            register("Bad Name", lambda ctx: None, "x")

    register(Plugin(), "bad")
    with pytest.raises(PluginError, match="plugin 'bad'.*Bad Name"):
        plugins.analyses()


def test_register_analyses_rejects_unknown_needs(plugins, register):
    class Plugin:
        @hookimpl
        def tsubaki_register_analyses(self, register):
            register("x", lambda ctx: None, "x", needs=["telepathy"])

    register(Plugin(), "needy")
    with pytest.raises(PluginError, match="telepathy"):
        plugins.analyses()


def test_register_analyses_declares_options_that_analyze_offers(plugins, register, tiny_tsd, monkeypatch):
    """An analysis's own option (pytest_addoption): ``analyze --depth 3`` reaches ``ctx.option("depth")``."""
    from tsubaki_forensics.cli import analyze_commands

    seen = []

    def deep(ctx):
        seen.append(dict(ctx.options))
        return AnalysisResult("deep", "Deep", facts=(("depth", ctx.option("depth")),))

    class Types:  # the tiny dump has no kernel: a provider that serves nothing, so the chain ends
        name, description, order = "none", "no types at all", 1

        def provide(self, request):
            return DebugInfoReport(DebugInfoKind.BTF, self.name)

    class Plugin:
        @hookimpl
        def tsubaki_register_analyses(self, register):
            register("deep", deep, "goes deep", options=[AnalysisOption("depth", int, "how deep to go", min=0)])

        @hookimpl
        def tsubaki_register_debug_info(self, register):
            register(Types())

    register(Plugin(), "deep")
    options = plugins.analysis_options()
    assert options["depth"][1] == ["deep"] and options["depth"][0].flag == "--depth"
    monkeypatch.setattr(analyze_commands, "get_plugins", lambda disable=(): plugins)
    app = typer.Typer()
    app.command("analyze")(analyze_commands.analyze_command(options))
    app.command("other")(lambda: None)
    assert "--depth" in CliRunner().invoke(app, ["analyze", "--help"]).output
    result = CliRunner().invoke(app, ["analyze", str(tiny_tsd), "--only", "deep", "--depth", "3", "-q",
                                      "--format", "json"])
    assert seen == [{"depth": 3}], result.output
    assert CliRunner().invoke(app, ["analyze", str(tiny_tsd), "--depth", "-1"]).exit_code == 2  # min=0


def test_register_analyses_options_must_agree(plugins, register):
    class Plugin:
        @hookimpl
        def tsubaki_register_analyses(self, register):
            register("a", lambda ctx: None, "a", options=[AnalysisOption("depth", int, "how deep")])
            register("b", lambda ctx: None, "b", options=[AnalysisOption("depth", str, "how deep")])

    register(Plugin(), "two")
    with pytest.raises(PluginError, match="declares option --depth as str, analysis 'a' as int"):
        plugins.analysis_options()
    with pytest.raises(ValueError, match="needs a help text"):
        AnalysisOption("depth", int, "")


def test_hook_tsubaki_register_renderers(plugins, register):
    def csv(report, out):
        for r in report.results:
            out.write(f"{r.name},{r.status.value}\n")

    class Plugin:
        @hookimpl
        def tsubaki_register_renderers(self, register):
            register("csv", csv, "one line per analysis")

    register(Plugin(), "csv-plugin")
    renderers = plugins.renderers()
    assert {"text", "json", "csv"} <= set(renderers)
    out = io.StringIO()
    report = Report(DumpSummary(paths=("d.tsd",)), (AnalysisResult("a", "A"),))
    renderers["csv"].function(report, out)
    assert out.getvalue() == "a,ok\n"


def test_hook_tsubaki_register_commands(plugins, register):
    class Plugin:
        @hookimpl
        def tsubaki_register_commands(self, app):
            @app.command("hello")
            def hello(name: str) -> None:
                typer.echo(f"hello {name}")

    register(Plugin(), "cmd")
    app = typer.Typer()

    @app.command("builtin")
    def builtin() -> None:
        pass

    plugins.register_commands(app)
    result = CliRunner().invoke(app, ["hello", "crash"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello crash\n"


def test_plugin_hook_errors_are_not_swallowed(plugins, register):
    class Plugin:
        @hookimpl
        def tsubaki_register_analyses(self, register):
            raise RuntimeError("Don't hide me!")

    register(Plugin(), "loud")
    # not hidden: one line naming the plugin and the error, the original kept as the cause
    with pytest.raises(PluginError, match="'loud'.*RuntimeError: Don't hide me!") as info:
        plugins.analyses()
    assert isinstance(info.value.__cause__, RuntimeError)

