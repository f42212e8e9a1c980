"""The plugin manager: entry-point discovery for real, disabling, errors shown, the meta-test."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tsubaki_forensics.errors import PluginError
from tsubaki_forensics.plugin_system import (
    DISABLE_ENV,
    Plugins,
    disabled_from_argv,
    disabled_from_env,
    hookimpl,
    hookspecs,
)

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def _hookspec_functions():
    return [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("tsubaki_")]


def test_every_hook_is_documented_typed_and_tested():
    """datasette's meta-test: a docstring with every :param:, annotations, and a test_hook_<name>."""
    tested = set()
    for path in TESTS.glob("test_plugin*.py"):
        tree = ast.parse(path.read_text())
        tested |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    specs = _hookspec_functions()
    assert len(specs) >= 6
    for func in specs:
        doc = inspect.getdoc(func) or ""
        sig = inspect.signature(func)
        for param in sig.parameters:
            assert f":param {param}:" in doc, f"{func.__name__}: :param {param}: undocumented"
            assert sig.parameters[param].annotation is not inspect.Parameter.empty, f"{func.__name__}: {param} untyped"
        assert sig.return_annotation is not inspect.Signature.empty, f"{func.__name__}: return untyped"
        assert f"test_hook_{func.__name__}" in tested, f"no test_hook_{func.__name__}"
        opts = getattr(func, "tsubaki_forensics_spec")
        if opts.get("firstresult"):
            assert "stops at the first non-none result" in doc.lower(), func.__name__
            assert ":returns:" in doc


def test_hook_source_has_phase_banners():
    text = inspect.getsource(hookspecs)
    for phase in ("collect", "reassemble", "program", "analyze", "render", "CLI"):
        assert f"# {phase}" in text


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """Write a plugin distribution (dist-info + module) on sys.path; return a writer."""

    def make(dist: str, entry: str, module: str, source: str, version: str = "1.2.3") -> Path:
        info = tmp_path / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[tsubaki_forensics]\n{entry} = {module}\n")
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return tmp_path

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for name in [m for m in sys.modules if m.startswith("fake_tsubaki_")]:
        del sys.modules[name]


GOOD = """
from tsubaki_forensics.analysis import AnalysisResult
from tsubaki_forensics.plugin_system import hookimpl

@hookimpl
def tsubaki_register_analyses(register):
    register("fake-one", lambda ctx: AnalysisResult("fake-one", "Fake"), "a fake analysis")
"""


def test_entry_point_discovery(fake_dist):
    fake_dist("fake-tsubaki-plugin", "fakeone", "fake_tsubaki_one", GOOD)
    plugins = Plugins.load()
    info = {p.name: p for p in plugins.plugins()}
    assert info["fakeone"].distribution == "fake-tsubaki-plugin"
    assert info["fakeone"].version == "1.2.3"
    assert info["fakeone"].hooks == ("tsubaki_register_analyses",)
    assert plugins.analyses()["fake-one"].plugin == "fakeone"


def test_bundled_analyses_come_through_the_same_entry_points():
    info = {p.name: p for p in Plugins.load().plugins()}
    for name in ("tasks", "dmesg", "panic"):
        assert info[name].distribution == "tsubaki-forensics"
        assert info[name].module == f"tsubaki_plugins.{name}"


def test_disable_by_name(fake_dist, monkeypatch):
    fake_dist("fake-tsubaki-plugin", "fakeone", "fake_tsubaki_one", GOOD)
    assert "fake-one" not in Plugins.load(disable=["fakeone"]).analyses()
    monkeypatch.setenv(DISABLE_ENV, "fakeone, panic")
    assert disabled_from_env() == ["fakeone", "panic"]
    plugins = Plugins.load(disabled_from_env())
    assert {"fake-one", "panic"}.isdisjoint(plugins.analyses())
    assert "tasks" in plugins.analyses()


def test_disable_from_argv():
    argv = ["analyze", "d.tsd", "--disable", "a,b", "--disable=c", "--", "--disable", "x"]
    assert disabled_from_argv(argv) == ["a", "b", "c"]


def test_import_error_is_shown_with_the_plugin_name(fake_dist):
    fake_dist("broken-plugin", "broken", "fake_tsubaki_broken", "import no_such_module_anywhere\n")
    with pytest.raises(PluginError, match=r"plugin 'broken'.*ModuleNotFoundError.*no_such_module_anywhere.*--disable broken"):
        Plugins.load()
    assert "broken" not in {p.name for p in Plugins.load(disable=["broken"]).plugins()}


def test_import_error_reaches_the_cli_as_one_line(fake_dist):
    path = fake_dist("broken-plugin", "broken", "fake_tsubaki_broken", "raise RuntimeError('boom')\n")
    env = {"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "tsubaki_forensics.cli.app", "plugins"], capture_output=True, text=True, env=env)
    assert run.returncode == 1
    assert run.stderr.startswith("error: plugin 'broken'") and "RuntimeError: boom" in run.stderr
    assert "Traceback" not in run.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "tsubaki_forensics.cli.app", "plugins", "--disable", "broken"],
        capture_output=True, text=True, env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert "disabled: broken" in ok.stdout


def test_misspelled_hook_fails_check_pending():
    class Typo:
        @hookimpl
        def tsubaki_register_analysis(self, register):  # missing "es"
            pass

    plugins = Plugins.load(entry_points=False)
    plugins.pm.register(Typo(), name="typo")
    try:
        with pytest.raises(Exception, match="tsubaki_register_analysis"):
            plugins.pm.check_pending()
    finally:
        plugins.pm.unregister(name="typo")


def test_misspelled_hook_in_an_entry_point_is_a_plugin_error(fake_dist):
    src = "from tsubaki_forensics.plugin_system import hookimpl\n@hookimpl\ndef tsubaki_register_analysis(register):\n    pass\n"
    fake_dist("typo-plugin", "typo", "fake_tsubaki_typo", src)
    with pytest.raises(PluginError, match="typo"):
        Plugins.load()


@pytest.fixture(scope="session")
def sysinfo_installed(tmp_path_factory):
    """samples/tsubaki-sysinfo pip-installed (for real) into its own target directory."""
    target = tmp_path_factory.mktemp("sysinfo-site")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT / "samples" / "tsubaki-sysinfo")],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    return target


def test_sample_distribution_is_found_by_entry_point(sysinfo_installed, monkeypatch):
    monkeypatch.syspath_prepend(str(sysinfo_installed))
    importlib.invalidate_caches()
    try:
        plugins = Plugins.load()
        info = {p.name: p for p in plugins.plugins()}
        assert (info["sysinfo"].distribution, info["sysinfo"].version) == ("tsubaki-sysinfo", "0.1.0")
        assert plugins.analyses()["sysinfo"].plugin == "sysinfo"
    finally:
        sys.modules.pop("tsubaki_sysinfo", None)


def test_plugins_command_lists_the_sample(sysinfo_installed):
    env = {"PYTHONPATH": str(sysinfo_installed), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "tsubaki_forensics.cli.app", "plugins"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "sysinfo  (tsubaki-sysinfo 0.1.0; tsubaki_sysinfo)" in run.stdout
    assert "tsubaki_register_analyses" in run.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "tsubaki_forensics.cli.app", "plugins", "--format", "json"],
        capture_output=True, text=True, env=env,
    )
    import json

    data = json.loads(as_json.stdout)
    assert data["analyses"]["sysinfo"]["plugin"] == "sysinfo"
    assert {"tasks", "dmesg", "panic", "sysinfo"} <= set(data["analyses"])


@pytest.mark.realkernel
def test_sample_plugin_tests_pass_with_the_testing_fixtures(sysinfo_installed, real_crash):
    """The sample's own test suite, using tsubaki_forensics.testing's fixtures (pytest11) on a real crash."""
    env = {
        "PYTHONPATH": str(sysinfo_installed),
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "TSUBAKI_TEST_VMCORE": str(real_crash.vmcore),
        "TSUBAKI_TEST_VMLINUX": str(real_crash.vmlinux),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "samples" / "tsubaki-sysinfo" / "tests")],
        capture_output=True, text=True, env=env, cwd=ROOT / "samples" / "tsubaki-sysinfo",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
