"""``sysinfo``: host name, release, uptime and kernel command line of the crashed kernel.

Reads globals through drgn (``init_uts_ns``, ``saved_command_line``) and
the ``uptime`` timekeeping helper; each value is read on its own so a
partial dump gives placeholders, not an exception.
"""

from __future__ import annotations

from drgn.helpers.linux.timekeeping import uptime

from tsubaki_forensics.analysis import AnalysisContext, AnalysisResult, Completeness, Missing, Need, NotCollected
from tsubaki_forensics.analysis.guard import read_value
from tsubaki_forensics.plugin_system import hookimpl

__all__ = ["analyze", "tsubaki_register_analyses"]


def _text(obj) -> str:  # type: ignore[no-untyped-def]
    return obj.string_().decode("utf-8", "backslashreplace")


def analyze(ctx: AnalysisContext) -> AnalysisResult:
    """Read the four values; say which were not collected."""
    prog = ctx.prog
    facts = (
        ("hostname", read_value(lambda: _text(prog["init_uts_ns"].name.nodename))),
        ("release", read_value(lambda: _text(prog["init_uts_ns"].name.release))),
        ("uptime seconds", read_value(lambda: round(uptime(prog), 3))),
        ("command line", read_value(lambda: _text(prog["saved_command_line"]))),
    )
    missing = tuple(
        Missing(name, value.address) for name, value in facts if isinstance(value, NotCollected)
    )
    readable = sum(1 for _, v in facts if isinstance(v, (str, float)))
    return AnalysisResult(
        name="sysinfo",
        title="System information",
        facts=facts,
        completeness=(Completeness("values", readable, len(facts), missing),),
    )


@hookimpl
def tsubaki_register_analyses(register) -> None:  # type: ignore[no-untyped-def]
    """Register ``sysinfo``."""
    register("sysinfo", analyze, "host name, release, uptime and kernel command line", needs=[Need.DEBUG_INFO])
