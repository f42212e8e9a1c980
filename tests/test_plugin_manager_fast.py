"""The plugin manager finds exactly the hook implementations pluggy's own lookup finds.

Issue 21: ``_PluginManager.parse_hookimpl_opts`` skips pluggy's
``inspect.getattr_static`` for a module's plain names; its answer must be
pluggy's for every name of every plugin, the bundled ones and a module holding
each kind of attribute a hook implementation could hide behind.
"""

from __future__ import annotations

import importlib.metadata
import types

import pluggy

from tsubaki_forensics.plugin_system import builtin, hookimpl
from tsubaki_forensics.plugin_system.hookspecs import PROJECT_NAME
from tsubaki_forensics.plugin_system.manager import ENTRY_POINT_GROUP, Plugins, _PluginManager


class _Holder:
    @hookimpl
    def tsubaki_register_renderers(self, register):
        pass

    @staticmethod
    @hookimpl
    def tsubaki_register_sources(register):
        pass

    @classmethod
    @hookimpl
    def tsubaki_register_analyses(cls, register):
        pass


def _odd_module() -> types.ModuleType:
    """A module plugin with marked and unmarked functions, wrapped and bound methods, classes, data."""
    mod = types.ModuleType("odd_plugin")

    @hookimpl(trylast=True)
    def tsubaki_reassemble(paths):
        return None

    def helper():
        return None

    helper.tsubaki_forensics_impl = "not a dict"  # a marker that is not pluggy's
    holder = _Holder()
    mod.__dict__.update(
        tsubaki_reassemble=tsubaki_reassemble, helper=helper, bound=holder.tsubaki_register_renderers,
        static=_Holder.__dict__["tsubaki_register_sources"], klass=_Holder.__dict__["tsubaki_register_analyses"],
        Holder=_Holder, number=3, text="x", builtin_len=len, lam=lambda: None, module=types,
    )
    return mod


def _modules() -> list[object]:
    found = [builtin, _odd_module(), _Holder, _Holder()]
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.append(ep.load())
    return found


def test_every_name_gets_pluggys_answer():
    ours, theirs = _PluginManager(PROJECT_NAME), pluggy.PluginManager(PROJECT_NAME)
    checked = hooks = 0
    for plugin in _modules():
        for name in dir(plugin):
            got = ours.parse_hookimpl_opts(plugin, name)
            assert got == theirs.parse_hookimpl_opts(plugin, name), (plugin, name)
            checked += 1
            hooks += got is not None
    assert checked > 300 and hooks >= 10  # the bundled plugins' names and hooks were all seen


def _impls(pm: pluggy.PluginManager) -> set[tuple[str, str, object]]:
    return {(hook, impl.plugin_name, impl.function) for hook in pm.hook.__dict__
            for impl in getattr(pm.hook, hook).get_hookimpls()}


def test_loaded_plugins_use_it_and_keep_every_hook():
    """Plugins.load() registers the same implementations pluggy's manager registers."""
    pm = Plugins.load().pm
    assert isinstance(pm, _PluginManager)
    from tsubaki_forensics.plugin_system import hookspecs

    reference = pluggy.PluginManager(PROJECT_NAME)
    reference.add_hookspecs(hookspecs)
    for name, plugin in pm.list_name_plugin():
        if plugin is not None:
            reference.register(plugin, name)
    got = _impls(pm)
    assert got == _impls(reference)
    assert {"tsubaki_reassemble", "tsubaki_register_analyses"} <= {hook for hook, _, _ in got}


def _described(eps) -> list[tuple[str, str, str, str | None, str | None]]:
    return [(ep.group, ep.name, ep.value, ep.dist and ep.dist.name, ep.dist and ep.dist.version) for ep in eps]


def test_entry_points_are_importlib_metadatas(tmp_path, monkeypatch):
    """``manager.entry_points`` (parsing only the files that name the group) finds what
    ``importlib.metadata.entry_points(group=...)`` finds, in its order, for any group: the
    first copy of a distribution on ``sys.path`` wins, a mention in a comment or another
    group's value changes nothing."""
    from tsubaki_forensics.plugin_system.manager import entry_points

    def dist(where: str, name: str, version: str, text: str) -> None:
        info = tmp_path / where / f"{name.replace('-', '_')}-{version}.dist-info"  # the escaped name, as pip writes it
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(text)

    dist("a", "fake-first", "1.0", f"[{ENTRY_POINT_GROUP}]\nfirst = fake_first_mod\n")
    dist("b", "fake_first", "2.0", f"[{ENTRY_POINT_GROUP}]\nshadowed = fake_first_mod_two\n")  # same name, later
    dist("a", "fake-comment", "1.0", f"# not {ENTRY_POINT_GROUP}\n[console_scripts]\nx = {ENTRY_POINT_GROUP}.cli:main\n")
    dist("b", "fake-two", "0.1", f"[other]\no = m\n\n[{ENTRY_POINT_GROUP}]\ntwo = fake_two_mod:plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    importlib.invalidate_caches()
    for group in (ENTRY_POINT_GROUP, "console_scripts", "other", "pytest11", "no-such-group"):
        assert _described(entry_points(group)) == _described(importlib.metadata.entry_points(group=group)), group
    names = [ep.name for ep in entry_points()]
    assert "first" in names and "two" in names and "shadowed" not in names
    assert {"tasks", "panic", "memory-sources", "symbol-pack"} <= set(names)


def test_entry_points_ask_other_distributions_as_usual(monkeypatch):
    """A distribution that is not a plain ``PathDistribution`` (a custom finder's) is asked for
    its entry points, whatever its files say; one without ``_normalized_name`` falls back to
    ``importlib.metadata.entry_points``."""
    from tsubaki_forensics.plugin_system import manager

    ep = importlib.metadata.EntryPoint("custom", "fake_custom_mod", ENTRY_POINT_GROUP)

    class Custom(importlib.metadata.Distribution):
        _normalized_name = "fake_custom"

        def read_text(self, filename):
            return "[other]\n" if filename == "entry_points.txt" else None

        def locate_file(self, path):
            return path

        @property
        def entry_points(self):
            return importlib.metadata.EntryPoints([ep])

    real = importlib.metadata.distributions
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [*real(), Custom()])
    assert [e.name for e in manager.entry_points()][-1] == "custom"

    class Nameless(Custom):
        _normalized_name = None

    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [Nameless(), *real()])
    sentinel = [importlib.metadata.EntryPoint("std", "std_mod", ENTRY_POINT_GROUP)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: sentinel)
    assert manager.entry_points() == sentinel
