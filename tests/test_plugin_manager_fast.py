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
