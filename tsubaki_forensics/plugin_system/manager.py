"""The plugin manager and the typed facade the core calls hooks through.

:class:`Plugins` wraps one ``pluggy.PluginManager`` created with the project
name ``tsubaki_forensics``; plugins come from the entry-point group of the
same name (the bundled analyses too).  Plugins are disabled by entry-point
name through ``TSUBAKI_DISABLE_PLUGINS`` or ``--disable`` (pytest's
``-p no:NAME``, drgn's ``DRGN_DISABLE_PLUGINS``).  A plugin that fails to
import stops the run with its name and the reason, never silently.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from ..contracts.analysis import AnalysisFunction, AnalysisOption, AnalysisSpec
from ..contracts.frozen import Frozen
from ..contracts.needs import Need
from ..errors import PluginError, TsubakiError
from ..sandbox import HOOK_TIMEOUT_S, plugin_call, stdout_to_stderr
from . import builtin, hookspecs
from .hookspecs import PROJECT_NAME
from .specs import DebugInfoSpec, RendererFunction, RendererSpec, SourceSpec

if TYPE_CHECKING:
    import drgn
    import typer

    from ..contracts.debuginfo import DebugInfoProvider

__all__ = [
    "ENTRY_POINT_GROUP",
    "entry_points",
    "DISABLE_ENV",
    "PluginInfo",
    "Plugins",
    "disabled_from_env",
    "disabled_from_argv",
    "get_plugins",
    "reset_plugins",
]

ENTRY_POINT_GROUP = PROJECT_NAME
DISABLE_ENV = "TSUBAKI_DISABLE_PLUGINS"
_SPLIT = re.compile(r"[,\s]+")


def disabled_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """Plugin names listed in ``TSUBAKI_DISABLE_PLUGINS`` (comma or space separated)."""
    value = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return [name for name in _SPLIT.split(value) if name]


def disabled_from_argv(argv: Sequence[str]) -> list[str]:
    """Names given to ``--disable`` anywhere on the command line.

    Plugins load before typer parses options (they add commands), so, like
    pytest's ``-p no:NAME``, ``--disable`` is read early.
    """
    names: list[str] = []
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--disable" and i + 1 < len(args):
            names.extend(n for n in _SPLIT.split(args[i + 1]) if n)
        elif arg.startswith("--disable="):
            names.extend(n for n in _SPLIT.split(arg.split("=", 1)[1]) if n)
    return names


_ABSENT = object()
_HOOKABLE = (types.FunctionType, staticmethod, classmethod, types.MethodType)


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, finding a module plugin's hook implementations without
    ``inspect.getattr_static`` on each of its names.

    Why: ``register`` asks :meth:`parse_hookimpl_opts` about every name in
    ``dir(plugin)``, ~440 for the bundled plugins (their imports included),
    and pluggy looks each up statically: 2 ms of every ``analyze`` (issue 21),
    0.2 ms this way.  For a name in a module's ``__dict__`` the static lookup
    finds that value, so a plain function's answer is its marker, and a value
    that is no function, static/class method or bound method is never a hook
    implementation; anything else (classes and instances as plugins, the
    other kinds) is pluggy's own answer.
    """

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        if isinstance(plugin, types.ModuleType):
            value = plugin.__dict__.get(name, _ABSENT)
            if type(value) is types.FunctionType:
                opts = getattr(value, self.project_name + "_impl", None)
                return opts if isinstance(opts, dict) else None
            if value is not _ABSENT and not isinstance(value, _HOOKABLE):
                return None
        return super().parse_hookimpl_opts(plugin, name)


class PluginInfo(Frozen):
    """One registered plugin as ``tsubaki-forensics plugins`` shows it."""

    _fields = ("name", "distribution", "version", "module", "hooks")
    name: str
    distribution: str | None
    version: str | None
    module: str
    hooks: tuple[str, ...]

    def __init__(self, name: str, distribution: str | None, version: str | None, module: str,
                 hooks: tuple[str, ...]) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "distribution", distribution)
        setattr_(self, "version", version)
        setattr_(self, "module", module)
        setattr_(self, "hooks", hooks)


class Plugins:
    """The typed facade over the plugin manager: one method per hook.

    Build it with :meth:`load`; tests may register small plugin objects on
    :attr:`pm` (and unregister them afterwards).
    """

    def __init__(self, pm: pluggy.PluginManager, distributions: Mapping[str, tuple[str, str]] | None = None):
        self.pm = pm
        self._distributions: dict[str, Any] = dict(distributions or {})
        self.disabled: tuple[str, ...] = ()
        #: seconds each hook call may run (tsubaki_reassemble: no limit; it reads the dump)
        self.hook_timeout: float | None = HOOK_TIMEOUT_S

    # -- loading ---------------------------------------------------------

    @classmethod
    def load(
        cls,
        disable: Iterable[str] = (),
        *,
        entry_points: bool = True,
        group: str = ENTRY_POINT_GROUP,
        builtins: bool = True,
    ) -> Plugins:
        """Create a fresh manager, register the built-ins and the entry points.

        :param disable: entry-point names (or ``"builtin"``) not to load.
        :raises PluginError: a plugin failed to import, or implements a hook
            that does not exist (``check_pending``), or has a bad signature.
        """
        pm = _PluginManager(PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        disabled = tuple(dict.fromkeys(disable))
        for name in disabled:
            pm.set_blocked(name)
        plugins = cls(pm)
        plugins.disabled = disabled
        if builtins and not pm.is_blocked(builtin.BUILTIN_NAME):
            plugins._register(builtin, builtin.BUILTIN_NAME)
        if entry_points:
            plugins._load_entry_points(group)
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as e:
            raise PluginError(f"plugin {pm.get_name(e.plugin)!r}: {e}") from e
        return plugins

    def _load_entry_points(self, group: str) -> None:
        for ep in entry_points(group):
            if self.pm.is_blocked(ep.name) or self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                with stdout_to_stderr():  # an import-time print() must not reach stdout
                    plugin = ep.load()
            except Exception as e:
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) failed to import: {type(e).__name__}: {e}"
                    f" (disable it with --disable {ep.name} or {DISABLE_ENV}={ep.name})"
                ) from e
            self._register(plugin, ep.name)
            if ep.dist is not None:
                # name and version parse the METADATA file (the email package): only `plugins` asks
                self._distributions[ep.name] = ep.dist

    def _register(self, plugin: object, name: str) -> None:
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as e:
            raise PluginError(f"plugin {name!r}: {e}") from e
        except ValueError as e:  # duplicate name or object
            raise PluginError(f"plugin {name!r}: {e}") from e

    # -- introspection ---------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin with its distribution, version and hooks."""
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()))
            found = self._distributions.get(name, (None, None))
            dist, version = found if isinstance(found, tuple) else (found.name, found.version)
            if name == builtin.BUILTIN_NAME:
                from .. import __version__

                dist, version = "tsubaki-forensics", __version__
            module = getattr(plugin, "__name__", type(plugin).__module__ + "." + type(plugin).__qualname__)
            out.append(PluginInfo(name, dist, version, module, hooks))
        return out

    # -- registration hooks (each impl gets its own ``register``) ----------

    def _each_impl(self, hook_name: str) -> list[pluggy.HookImpl]:
        """Implementations in registration order (pluggy calls them LIFO)."""
        caller = getattr(self.pm.hook, hook_name)
        return list(caller.get_hookimpls())

    def sources(self) -> dict[str, SourceSpec]:
        """Memory sources for ``collect``, by name (``tsubaki_register_sources``)."""
        found: dict[str, SourceSpec] = {}
        for impl in self._each_impl("tsubaki_register_sources"):

            def register(*args: Any, _p: str = impl.plugin_name, **kwargs: Any) -> None:
                self._add(found, "memory source", _source_spec(_p, *args, **kwargs))

            self._call_register(impl, register)
        return found

    def analyses(self) -> dict[str, AnalysisSpec]:
        """Analyses for ``analyze``, by name, in registration order."""
        found: dict[str, AnalysisSpec] = {}
        for impl in self._each_impl("tsubaki_register_analyses"):

            def register(
                name: str,
                function: AnalysisFunction,
                description: str,
                needs: Iterable[Need | str] = (),
                options: Iterable[AnalysisOption] = (),
                facts: Iterable[str] = (),
                _p: str = impl.plugin_name,
            ) -> None:
                try:
                    need_set = frozenset(Need(n) for n in needs)
                except ValueError as e:
                    raise PluginError(f"plugin {_p!r}: analysis {name!r}: {e}") from e
                spec = AnalysisSpec(name, function, description, need_set, _p, tuple(options), tuple(facts))
                self._add(found, "analysis", spec)

            self._call_register(impl, register)
        return found

    def analysis_options(self) -> dict[str, tuple[AnalysisOption, list[str]]]:
        """Every option the analyses declare, by name, with the analyses that read it.

        Two analyses may share an option only if they declare it alike (same
        type): ``analyze`` has one ``--NAME`` for both.
        """
        found: dict[str, tuple[AnalysisOption, list[str]]] = {}
        for spec in self.analyses().values():
            for option in spec.options:
                known = found.get(option.name)
                if known is None:
                    found[option.name] = (option, [spec.name])
                elif known[0].type is not option.type:
                    raise PluginError(f"plugin {spec.plugin!r}: analysis {spec.name!r} declares option "
                                      f"{option.flag} as {option.type.__name__}, analysis {known[1][0]!r} "
                                      f"as {known[0].type.__name__}")
                else:
                    known[1].append(spec.name)
        return found

    def renderers(self) -> dict[str, RendererSpec]:
        """Output formats for ``analyze --format``, by name."""
        found: dict[str, RendererSpec] = {}
        for impl in self._each_impl("tsubaki_register_renderers"):

            def register(name: str, function: RendererFunction, description: str, _p: str = impl.plugin_name) -> None:
                self._add(found, "renderer", RendererSpec(name, function, description, _p))

            self._call_register(impl, register)
        return found

    def debug_info_providers(self) -> list[DebugInfoSpec]:
        """The debug-info chain (``tsubaki_register_debug_info``), in the order it is asked."""
        found: dict[str, DebugInfoSpec] = {}
        for impl in self._each_impl("tsubaki_register_debug_info"):

            def register(provider: DebugInfoProvider, timeout: float | None = None,
                         _p: str = impl.plugin_name) -> None:
                self._add(found, "debug-info provider", DebugInfoSpec(provider, _p, timeout))

            self._call_register(impl, register)
        # each with its plugin and time limit: the chain names the plugin of one that hangs or raises
        return sorted(found.values(), key=lambda s: s.order)

    @staticmethod
    def _call_register(impl: pluggy.HookImpl, register: Any) -> None:
        try:
            with stdout_to_stderr():
                impl.function(register)
        except TsubakiError:
            raise
        except (TypeError, ValueError) as e:
            raise PluginError(f"plugin {impl.plugin_name!r}: {e}") from e
        except Exception as e:
            raise PluginError(f"plugin {impl.plugin_name!r} ({impl.function.__name__}) raised "
                              f"{type(e).__name__}: {e}") from e

    def _call_each(self, hook_name: str, *, firstresult: bool = False, limited: bool = True,
                   **kwargs: Any) -> list[Any]:
        """Call each implementation as pluggy would (LIFO), each through :func:`plugin_call`.

        One at a time so that a raise or a timeout names its plugin, and no
        hook can write to stdout or run without a time limit.
        """
        results = []
        for impl in reversed(self._each_impl(hook_name)):
            args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
            value = plugin_call(impl.plugin_name, hook_name, impl.function,
                                timeout=self.hook_timeout if limited else None, **args)
            if value is not None:
                results.append(value)
                if firstresult:
                    break
        return results

    @staticmethod
    def _add(found: dict[str, Any], kind: str, spec: Any) -> None:
        if spec.name in found:
            raise PluginError(
                f"plugin {spec.plugin!r} registers {kind} {spec.name!r}, already registered by {found[spec.name].plugin!r}"
            )
        found[spec.name] = spec

    # -- the other phases --------------------------------------------------

    def reassemble(self, paths: Sequence[Path]) -> Any:
        """The dump made of ``paths``: the first plugin that returns one wins."""
        found = self._call_each("tsubaki_reassemble", firstresult=True, limited=False, paths=list(paths))
        dump = found[0] if found else None
        if dump is None:
            raise PluginError(f"no plugin could open {', '.join(map(str, paths))}")
        return dump

    def debug_info_paths(self, build_id: str | None, release: str | None) -> list[Path]:
        """Extra vmlinux files or directories offered by plugins, flattened."""
        results = self._call_each("tsubaki_debug_info_paths", build_id=build_id, release=release)
        return [Path(p) for paths in reversed(results) for p in (paths or ())]

    def program_ready(self, prog: drgn.Program, dump: Any) -> None:
        """Let plugins adjust the program before analyses run."""
        self._call_each("tsubaki_program_ready", prog=prog, dump=dump)

    def register_commands(self, app: typer.Typer) -> None:
        """Let plugins add subcommands (after the built-in ones)."""
        self._call_each("tsubaki_register_commands", app=app)


def entry_points(group: str = ENTRY_POINT_GROUP) -> list[importlib.metadata.EntryPoint]:
    """``importlib.metadata.entry_points(group=group)``, parsing only the files that name ``group``.

    Why: the standard call parses the ``entry_points.txt`` of every
    installed distribution (~60 in a test environment) into entry points of
    every group, 3 ms of each ``analyze`` (issue 21).  The same distributions
    are walked in the same order, one per name (the first on ``sys.path``
    wins, as ``importlib.metadata`` dedupes them); the ``entry_points.txt``
    of a distribution found on ``sys.path`` whose text does not contain the
    group's name cannot declare an entry in it, so it is not parsed (another
    kind of distribution, from a custom finder, is asked as usual).  On a
    Python whose ``importlib.metadata`` has no ``_normalized_name`` (its
    deduplication key), the standard call is used.
    """
    found: list[importlib.metadata.EntryPoint] = []
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        key = getattr(dist, "_normalized_name", None)
        if not isinstance(key, str):
            return list(importlib.metadata.entry_points(group=group))
        if key in seen:
            continue
        seen.add(key)
        if type(dist) is importlib.metadata.PathDistribution:  # its entry points are that file's
            text = dist.read_text("entry_points.txt")
            if not text or group not in text:
                continue
        found.extend(dist.entry_points.select(group=group))
    return found


def _source_spec(plugin: str, *args: Any, **kwargs: Any) -> SourceSpec:
    """Accept ``register(name, factory, description)`` or ``register(source_type)``."""
    if len(args) == 1 and not kwargs:
        st = args[0]
        try:
            return SourceSpec(st.name, st.open, st.description, plugin, getattr(st, "probe", None), st)
        except AttributeError as e:
            raise PluginError(f"plugin {plugin!r}: memory source {st!r} lacks {e.name!r}") from e
    return SourceSpec(*args, plugin=plugin, **kwargs)


_loaded: Plugins | None = None


def get_plugins(disable: Iterable[str] = ()) -> Plugins:
    """The process-wide plugins, loaded once (env and ``disable`` applied then)."""
    global _loaded
    if _loaded is None:
        _loaded = Plugins.load([*disabled_from_env(), *disable])
    return _loaded


def reset_plugins() -> None:
    """Forget the process-wide plugins (the next :func:`get_plugins` reloads)."""
    global _loaded
    _loaded = None
