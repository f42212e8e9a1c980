"""``analyze``, ``shell`` and ``plugins``: the commands of the analyze step.

Data goes to stdout (the renderer's output), progress and warnings to
stderr.  Exit codes of ``analyze``: 0 every analysis complete; 4 some result
is partial or skipped (the dump lacks something it needed); 5 an analysis
failed; 1 bad input (one ``error:`` line).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..errors import PluginError, TsubakiError
from . import argv_disabled, output
from .output import check_format, format_option, print_error, print_json, print_warning, safe_text

if TYPE_CHECKING:
    from ..analysis.results import Status
    from ..analysis.spec import AnalysisOption
    from ..plugin_system import Plugins

__all__ = ["register", "EXIT_PARTIAL", "EXIT_FAILED", "exit_code", "check_dumps", "get_plugins"]

EXIT_PARTIAL = 4
TEXT_LOG_LINES = 50  # crash-style text ends with the log's tail, as a kernel engineer reads it first
EXIT_FAILED = 5

_DumpPaths = Annotated[
    list[Path], typer.Argument(metavar="DUMP.tsd", help="The .tsd file(s) of one dump, in any order.", show_default=False)
]
_Vmlinux = Annotated[
    Optional[Path],
    typer.Option("--vmlinux", help="vmlinux with DWARF debug info; by default found by the dump's build id."),
]
_DebugDirs = Annotated[
    Optional[list[Path]],
    typer.Option("--debug-dir", help="Also search this debug directory (.build-id/xx/yyyy.debug, boot/vmlinux-RELEASE); repeatable."),
]
_SelfContained = Annotated[
    bool,
    typer.Option("--self-contained", help="No vmlinux: use the BTF, kallsyms and ORC tables inside the dump (no file:line, no inline frames)."),
]
_Quiet = Annotated[
    bool,
    typer.Option("-q", "--quiet", help="No progress lines and no 'warning: limitation:' lines (damage to the dump is still reported)."),
]
_Disable = Annotated[
    Optional[list[str]],
    typer.Option("--disable", help="Do not load this plugin (entry-point name); repeatable. Also TSUBAKI_DISABLE_PLUGINS."),
]


def _names(values: list[str] | None) -> list[str]:
    return [n for v in values or () for n in v.replace(" ", ",").split(",") if n]


def get_plugins(disable: list[str]) -> Plugins:
    """The process-wide plugins (imported here: the help of these commands loads none but analyze's)."""
    from ..plugin_system import get_plugins as load

    return load(disable)


def _debug_dirs(given: list[Path] | None) -> list[Path]:
    from ..drgn_bridge.debuginfo import DEFAULT_DEBUG_DIRS

    return [*(given or ()), *DEFAULT_DEBUG_DIRS]


def _check_renderer(value: str) -> str:
    """``--format`` of ``analyze``: a renderer name (plugins add some), checked while parsing like every --format."""
    return check_format(value, list(get_plugins(argv_disabled()).renderers()))


def exit_code(statuses: list[Status]) -> int:
    """The documented exit code for a run whose analyses ended with ``statuses``."""
    from ..analysis.results import Status

    if Status.FAILED in statuses:
        return EXIT_FAILED
    if Status.PARTIAL in statuses or Status.SKIPPED in statuses:
        return EXIT_PARTIAL
    return 0


def _render(spec, report) -> None:
    """Run a renderer (plugin code): a raise is one line naming its plugin, not a traceback."""
    try:
        spec.function(report, sys.stdout)
        sys.stdout.flush()
    except (TsubakiError, OSError):
        raise
    except Exception as e:
        raise PluginError(f"renderer {spec.name!r} (plugin {spec.plugin!r}) raised {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else '(no message)'}") from None


def _bundled(spec) -> bool:
    """Is ``spec`` one of the core's own renderers (text, json)?"""
    from ..plugin_system.builtin import BUILTIN_NAME

    return spec.plugin == BUILTIN_NAME


def analyze(
    dumps: _DumpPaths,
    vmlinux: _Vmlinux = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only these analyses (comma-separated or repeated).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Skip these analyses.")] = None,
    format: Annotated[str, typer.Option("-f", "--format", metavar="{text,json,...}", callback=_check_renderer, help="Output format: text, json, or one a plugin adds (`plugins` lists them).")] = "text",
    full: Annotated[bool, typer.Option("--full", help="text: the whole kernel log, not its last 50 lines (JSON always has it all).")] = False,
    debug_dir: _DebugDirs = None,
    self_contained: _SelfContained = False,
    disable: _Disable = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds each analysis may run before it is failed (0: no limit).")] = 300.0,
    strict: Annotated[bool, typer.Option("--strict", help="CI: the first failed analysis (raised, timed out, malformed result) ends the run with exit 5.")] = False,
    quiet: _Quiet = False,
    *,
    analysis_options: dict[str, Any] | None = None,
) -> None:
    """Analyse a dump: tasks, kernel log, panic backtrace, and plugin analyses.

    Exit 0 when every result is complete, 4 when some is partial or skipped,
    5 when an analysis failed.
    """
    from ..analysis.session import analyze_dump, open_program

    plugins = get_plugins(_names(disable))
    renderers = plugins.renderers()
    check_format(format, list(renderers))
    check_dumps(dumps)
    if not quiet:
        sys.stderr.write(f"opening {', '.join(map(str, dumps))}\n")
    if self_contained and vmlinux is not None:
        raise TsubakiError("--self-contained and --vmlinux exclude each other")
    opened = open_program(dumps, plugins, vmlinux=vmlinux, debug_dirs=_debug_dirs(debug_dir), self_contained=self_contained)
    output.resume_gc()  # paused for the start-up by cli/app.py; the analyses' garbage grows with the dump
    try:
        report = analyze_dump(
            opened,
            plugins,
            only=_names(only),
            exclude=_names(exclude),
            options=_text_tail(dict(analysis_options or {}), full=full, text=format == "text"),
            progress=None if quiet else (lambda name: sys.stderr.write(f"running {name}\n")),
            timeout=timeout or None,
            strict=strict,
        )
    except PluginError as e:
        if not strict:
            raise
        print_error(str(e))
        sys.exit(EXIT_FAILED)
    finally:
        opened.close()
    for problem in (*report.dump.problems, *(() if quiet else report.warnings)):
        print_warning(problem)
    _render(renderers[format], report)
    if _bundled(renderers[format]):  # a plugin's renderer may leave a file to flush at exit: the normal exit
        output.allow_quick_exit()  # the output is written: the process may end without tearing down its heap
    code = exit_code([r.status for r in report.results])
    if code:
        # SystemExit, not typer.Exit: click returns typer.Exit's code from
        # app() in non-standalone mode, where cli/app.py does not look at it.
        sys.exit(code)


def _text_tail(options: dict[str, Any], *, full: bool, text: bool) -> dict[str, Any]:
    """Crash-style text ends with the log's last 50 lines unless ``--tail`` or ``--full`` says otherwise."""
    if "tail" in options and options["tail"] is None and text and not full:
        options["tail"] = TEXT_LOG_LINES
    return options


def _option_parameter(option: AnalysisOption, users: list[str]) -> inspect.Parameter:
    """``analyze --NAME``, as an analysis declared it (``AnalysisOption``)."""
    help_text = f"{', '.join(users)}: {option.help}"
    flags = (option.flag, option.short) if option.short else (option.flag,)
    if option.type is bool:
        annotation: Any = Annotated[bool, typer.Option(*flags, help=help_text)]
        default: Any = False
    else:
        extra = {"min": option.min} if option.min is not None else {}
        annotation = Annotated[Optional[option.type], typer.Option(*flags, help=help_text, **extra)]
        default = None
    return inspect.Parameter(f"option_{option.name}", inspect.Parameter.KEYWORD_ONLY,
                             default=default, annotation=annotation)


def analyze_command(options: dict[str, tuple[AnalysisOption, list[str]]]) -> Callable[..., None]:
    """``analyze`` with one ``--NAME`` per option the registered analyses declare.

    typer reads a command's options from its signature, so the command is
    :func:`analyze` behind a signature that adds them (pytest's
    ``pytest_addoption``: the plugins' options join the core's).
    """
    base = inspect.signature(analyze, eval_str=True)
    taken = {p.name for p in base.parameters.values()}
    params = [p for p in base.parameters.values() if p.name != "analysis_options"]
    added = {name: _option_parameter(option, users) for name, (option, users) in options.items()
             if f"option_{name}" not in taken}

    def command(**kwargs: Any) -> None:
        given = {name: kwargs.pop(p.name) for name, p in added.items()}
        analyze(**kwargs, analysis_options=given)

    command.__signature__ = base.replace(parameters=[*params, *added.values()])  # type: ignore[attr-defined]
    command.__doc__ = analyze.__doc__
    command.__name__ = "analyze"
    return command


def check_dumps(paths: list[Path]) -> None:
    """Every path exists.  Any format is opened directly (ELF, kdump, flattened,
    wrapped: docs/FORMATS.md); an unknown one is one line from the reader
    naming the formats understood."""
    for path in paths:
        if not path.exists():
            raise TsubakiError(f"{path}: no such file")


def _is_dump(argument: str) -> bool:
    """Does ``argument`` name a dump (by its magic, so ``dump.part2`` counts and ``x.py`` does not)?

    Any format the readers know counts (.tsd, ELF, kdump, flattened, wrapped:
    docs/FORMATS.md)."""
    from ..errors import FormatError
    from ..vmcore.detect import sniff

    try:
        return sniff(argument) != "unknown"
    except FormatError:
        return argument.endswith(".tsd")  # reported as "no such file" by the reader


def shell(
    ctx: typer.Context,
    arguments: Annotated[
        list[str],
        typer.Argument(metavar="DUMP.tsd... [SCRIPT [ARGS]...]", show_default=False,
                       help="The .tsd file(s) of one dump, then optionally a Python script and its arguments."),
    ],
    code: Annotated[Optional[str], typer.Option("-e", "--exec", metavar="CODE", help="Run CODE (drgn -e) instead of the REPL; the arguments after the dump are its sys.argv[1:].")] = None,
    vmlinux: _Vmlinux = None,
    debug_dir: _DebugDirs = None,
    self_contained: _SelfContained = False,
    disable: _Disable = None,
) -> None:
    """drgn on a dump: the REPL on a terminal, or code (-e), a script, or statements piped on stdin.

    ``prog`` and drgn's helpers are ready, the dump object is ``dump``, and
    drgn's commands work (``%crash bt``). Off a terminal there is no prompt;
    an uncaught exception prints its traceback and exits 1. Put ``--`` before
    a script's own options.

    """
    from ..analysis import scripting
    from ..analysis.session import open_program

    if Path(arguments[0]).is_file():
        check_dumps([Path(arguments[0])])  # an ELF vmcore first: the import hint
    split = next((i for i, a in enumerate(arguments) if not _is_dump(a)), len(arguments))
    dumps, rest = [Path(a) for a in arguments[:split]], [*arguments[split:], *ctx.args]
    if not dumps:
        raise TsubakiError(f"{arguments[0]}: not a .tsd dump (the dump comes before the script)")
    check_dumps(dumps)
    script = rest[0] if rest and code is None else None
    if script is not None and not Path(script).is_file():
        raise TsubakiError(f"{script}: no such script")
    if self_contained and vmlinux is not None:
        raise TsubakiError("--self-contained and --vmlinux exclude each other")
    plugins = get_plugins(_names(disable))
    opened = open_program(dumps, plugins, vmlinux=vmlinux, debug_dirs=_debug_dirs(debug_dir), self_contained=self_contained)
    output.resume_gc()  # paused for the start-up by cli/app.py; the user's code runs with it
    prog, extra = opened.program.prog, {"dump": opened.dump}
    try:
        if code is not None:
            status = scripting.run_code(prog, code, rest, extra)
        elif script is not None:
            status = scripting.run_script(prog, script, rest[1:], extra)
        elif not sys.stdin.isatty():
            status = scripting.run_piped(prog, extra)
        else:
            import drgn.cli

            def banner(text: str) -> str:
                return (
                    f"{text}\ntsubaki-forensics: {', '.join(map(str, dumps))} (the dump object is `dump`;"
                    " drgn's crash commands: %crash bt, %crash ps, %crash log)"
                )

            def add_globals(namespace: dict) -> dict:
                namespace["dump"] = opened.dump
                return namespace

            drgn.cli.run_interactive(prog, banner_func=banner, globals_func=add_globals)
            status = 0
    finally:
        sys.stdout.flush()
        opened.close()
    if status:
        sys.exit(status)


def plugins_command(
    format: Annotated[str, format_option()] = "text",
    disable: _Disable = None,
) -> None:
    """List plugins with their versions and hooks, and what they register."""
    plugins = get_plugins(_names(disable))
    infos = plugins.plugins()
    analyses, renderers = plugins.analyses(), plugins.renderers()
    sources = plugins.sources()
    if format == "json":
        print_json(
            {
                "plugins": [i.__dict__ | {"hooks": list(i.hooks)} for i in infos],
                "disabled": list(plugins.disabled),
                "analyses": {n: {"plugin": s.plugin, "description": s.description, "needs": sorted(x.value for x in s.needs)} for n, s in analyses.items()},
                "renderers": {n: {"plugin": s.plugin, "description": s.description} for n, s in renderers.items()},
                "sources": {n: {"plugin": s.plugin, "description": s.description} for n, s in sources.items()},
            }
        )
        return
    stdout = output.stdout
    for info in infos:
        version = f"{info.distribution} {info.version}" if info.distribution else "registered in code"
        stdout.print(f"{safe_text(info.name)}  ({safe_text(version)}; {safe_text(info.module)})", markup=False)
        for hook in info.hooks:
            stdout.print(f"    {hook}", markup=False)
    if plugins.disabled:
        stdout.print(f"disabled: {', '.join(plugins.disabled)}", markup=False)
    for title, specs in (("analyses", analyses), ("renderers", renderers), ("memory sources", sources)):
        stdout.print(f"\n{title}:", markup=False)
        for name, spec in specs.items():
            stdout.print(f"    {name:<16} {safe_text(spec.description)}  [{spec.plugin}]", markup=False)


class _AnalyzeCommand:
    """``analyze`` as typer sees it, built when typer first reads its signature.

    Its options include those the loaded analyses declare, so building it
    loads the plugins; listing the command (the root ``--help``) reads only
    this docstring and loads none (issue 21).
    """

    __name__ = "analyze"
    __doc__ = analyze.__doc__
    __annotations__ = {}  # noqa: RUF012 - what typing.get_type_hints reads of a callable object

    def __init__(self) -> None:
        self._command: Callable[..., None] | None = None

    def _build(self) -> Callable[..., None]:
        if self._command is None:
            try:
                options = get_plugins(argv_disabled()).analysis_options()
            except PluginError:  # a broken analysis plugin: ``analyze`` says so when it runs
                options = {}
            self._command = analyze_command(options)
        return self._command

    @property
    def __signature__(self) -> inspect.Signature:
        return self._build().__signature__  # type: ignore[attr-defined]

    def __call__(self, **kwargs: Any) -> None:
        self._build()(**kwargs)


def register(app: typer.Typer) -> None:
    """Add ``analyze`` (with the options the analyses declare), ``shell`` and ``plugins`` to ``app``."""
    app.command("analyze")(_AnalyzeCommand())
    app.command("shell", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(shell)
    app.command("plugins")(plugins_command)
