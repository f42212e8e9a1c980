"""The :mod:`~tsubaki_forensics.contracts.frozen` records behave as the dataclasses they replaced.

Issue 21: they are defined in microseconds where ``@dataclass`` took ~0.5 ms
each at import.  Each is checked against a dataclass made here with the same
fields and defaults (read from its ``__init__``), frozen for a ``Frozen``:
same ``repr``, ``==`` and ``hash`` (none for a mutable ``Record``), and for a
``Frozen`` attributes that cannot be assigned or deleted.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest
from _frozen_check import as_dataclass, check_frozen_record

from tsubaki_forensics.contracts.analysis import AnalysisOption
from tsubaki_forensics.analysis.session import OpenedDump
from tsubaki_forensics.contracts.debuginfo import DebugInfoRequest, RegisteredProvider
from tsubaki_forensics.contracts.frozen import Frozen
from tsubaki_forensics.drgn_bridge.program import DumpProgram
from tsubaki_forensics.contracts.report import DumpSummary, Report
from tsubaki_forensics.contracts.results import (AnalysisResult, Column, Completeness, Missing, NotCollected, Table,
                                                 Unreadable)
from tsubaki_forensics.drgn_bridge.vmcoreinfo import VmcoreInfo, parse_vmcoreinfo
from tsubaki_forensics.plugin_system.manager import PluginInfo
from tsubaki_forensics.plugin_system.specs import DebugInfoSpec, RendererSpec, SourceSpec


class _Provider:
    name, description, order = "p", "a provider", 5

    def provide(self, request):
        return None


def _render(report, out):
    out.write("")


_COLUMN = Column("pid", "PID", int, "right")
_MISSING = Missing("30", 0x1000, group="pid")
# (instance, a second instance with one field changed)
SAMPLES = [
    (NotCollected(0x1000), NotCollected(0x1000, "excluded by dump level 31")),
    (Unreadable("bad"), Unreadable("worse")),
    (_COLUMN, Column("pid", "PID", int, fmt="hex")),
    (Table.build("t", "T", [_COLUMN], [[1], [NotCollected()]]), Table("t", "T", (_COLUMN,), ())),
    (_MISSING, Missing("30", 0x1000, group="pid", excluded="on purpose")),
    (Completeness("tasks", 1, 2, (_MISSING,)), Completeness("tasks", 1, None)),
    (DumpSummary(("a.tsd",), dump_level=31, excluded_bytes=4096), DumpSummary(("a.tsd",))),
    (Report(DumpSummary(("a.tsd",)), (AnalysisResult("n", "N"),), ("w",)), Report(DumpSummary(("a.tsd",)), ())),
    (AnalysisOption("tail", int, "lines", min=1, short="-T"), AnalysisOption("tail", int, "lines")),
    (RegisteredProvider(_Provider(), "p", 3.0), RegisteredProvider(_Provider())),
    (DebugInfoSpec(_Provider(), "p", 3.0), DebugInfoSpec(_Provider(), "p", 0)),
    (SourceSpec("elf", print, "an ELF vmcore"), SourceSpec("elf", print, "an ELF vmcore", "plug")),
    (RendererSpec("text", _render, "plain text"), RendererSpec("text", _render, "plain text", "plug")),
    (PluginInfo("p", None, None, "mod", ("hook",)), PluginInfo("p", "dist", "1.0", "mod", ("hook",))),
    (VmcoreInfo({"OSRELEASE": "6.1"}), VmcoreInfo({})),
]
_INFO = parse_vmcoreinfo("OSRELEASE=6.1.0\n")
MUTABLE = [
    (DebugInfoRequest(None, None, "00ff", "6.1.0", (), print), DebugInfoRequest(None, None, None, "6.1.0", (), print)),
    (OpenedDump((), "dump", None), OpenedDump((), "dump", "program")),
    (DumpProgram(None, _INFO, None, frozenset(), 2), DumpProgram(None, _INFO, None, frozenset(), 2, "report")),
]


@pytest.mark.parametrize("record, other", SAMPLES, ids=lambda r: type(r).__name__)
def test_a_record_is_what_its_frozen_dataclass_was(record, other):
    check_frozen_record(record, other)


@pytest.mark.parametrize("record, other", MUTABLE, ids=lambda r: type(r).__name__)
def test_a_mutable_record_is_what_its_dataclass_was(record, other):
    reference, reference_other = as_dataclass(record), as_dataclass(other)
    assert not isinstance(record, Frozen)
    assert repr(record) == repr(reference) and repr(other) == repr(reference_other)
    assert (record == other) == (reference == reference_other) is False
    assert record == type(record)(**{name: getattr(record, name) for name in record._fields})
    assert type(record).__hash__ is type(reference).__hash__ is None  # unhashable, as an eq dataclass
    name = record._fields[-1]
    setattr(record, name, getattr(other, name))
    setattr(reference, name, getattr(other, name))
    assert repr(record) == repr(reference)


def test_records_keep_their_checks_and_pickle():
    with pytest.raises(ValueError, match="row"):
        Table("t", "T", (_COLUMN,), ((1, 2),))
    with pytest.raises(TypeError, match="type must be"):
        AnalysisOption("x", list, "help")
    with pytest.raises(ValueError, match="description"):
        RendererSpec("text", _render, " ")
    with pytest.raises(TypeError, match="lacks"):
        DebugInfoSpec(object())
    for record in (_COLUMN, _MISSING, Completeness("tasks", 1, 2, (_MISSING,)), DumpSummary(("a",), dump_level=1)):
        assert pickle.loads(pickle.dumps(record)) == record


def _reference_dataclass(cls: type):
    """A real ``@dataclass(frozen=True)`` with ``cls``'s name and fields (defaults, factories, repr and
    compare flags as ``dataclasses.fields`` reports them)."""
    spec = []
    for f in dataclasses.fields(cls):
        kwargs = {"repr": f.repr, "compare": f.compare}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            kwargs["default_factory"] = f.default_factory
        spec.append((f.name, object, dataclasses.field(**kwargs)))
    ref = dataclasses.make_dataclass(cls.__name__, spec, frozen=True)
    ref.__qualname__ = cls.__qualname__
    return ref


def _dataclass_samples():
    from tsubaki_forensics.contracts.analysis import AnalysisContext, AnalysisSpec
    from tsubaki_forensics.contracts.debuginfo import DebugInfoKind, DebugInfoReport
    from tsubaki_forensics.contracts.needs import Need
    from tsubaki_forensics.contracts.results import Status

    return [
        (AnalysisResult, {"name": "n", "title": "N"},
         {"status": Status.FAILED, "error": "boom", "seconds": 1.5, "extra": {"traceback": "t"}}),
        (AnalysisResult, {"name": "n", "title": "N", "facts": (("a", 1),), "tables": (Table("t", "T", (_COLUMN,), ((1,),)),)},
         {"extra": {"x": 1}}),  # extra is not compared
        (AnalysisContext, {"prog": "prog"}, {"options": {"tail": 3}}),
        (AnalysisContext, {"prog": "prog", "dump": "d", "capabilities": frozenset({Need.DEBUG_INFO})}, {"dump": None}),
        (AnalysisSpec, {"name": "x", "function": print, "description": "d"},
         {"needs": frozenset({Need.REGISTERS}), "plugin": "p", "options": (AnalysisOption("tail", int, "lines"),),
          "facts": ("a_b",)}),
        (DebugInfoReport, {"kind": DebugInfoKind.BTF, "provider": "btf"},
         {"summary": ("s",), "passed_over": ("p: no",), "details": object()}),  # details: neither shown nor compared
        (DebugInfoReport, {"kind": DebugInfoKind.VMLINUX, "provider": "v", "vmlinux": "/v", "details": 1}, {}),
    ]


@pytest.mark.parametrize("cls, args, changes", _dataclass_samples(), ids=lambda x: getattr(x, "__name__", ""))
def test_a_described_dataclass_is_what_its_frozen_dataclass_was(cls, args, changes):
    """``dataclass_fields`` classes: the same fields, ``__init__`` defaults, repr, ==, hash, replace and
    frozen attributes as a ``@dataclass(frozen=True)`` of the same fields."""
    ref = _reference_dataclass(cls)
    record, reference = cls(**args), ref(**args)
    assert dataclasses.is_dataclass(record) and not dataclasses.is_dataclass(cls.__init__)
    described = dataclasses.fields(cls)
    assert cls._fields == tuple(f.name for f in described)
    assert cls._shown == tuple(f.name for f in described if f.repr)
    assert cls._compared == tuple(f.name for f in described if f.compare)
    assert {*cls._fields} - {*cls._shown} == ({"details"} if cls.__name__ == "DebugInfoReport" else set())
    ours, theirs = inspect.signature(cls).parameters.values(), inspect.signature(ref).parameters.values()
    assert [(p.name, p.kind, repr(p.default)) for p in ours] == [(p.name, p.kind, repr(p.default)) for p in theirs]
    for name in cls._fields:  # defaults and factories alike
        assert getattr(record, name) == getattr(reference, name)
    assert repr(record) == repr(reference)
    changed, reference_changed = dataclasses.replace(record, **changes), dataclasses.replace(reference, **changes)
    assert type(changed) is cls
    assert repr(changed) == repr(reference_changed)
    assert (changed == record) == (reference_changed == reference)
    assert dataclasses.replace(record) == record and dataclasses.replace(record) is not record
    try:
        expected = hash(reference)
    except TypeError:
        with pytest.raises(TypeError):
            hash(record)
    else:
        assert hash(record) == expected
    assert record != reference  # another class
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, cls._fields[0], None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(record, cls._fields[0])
    assert record.__match_args__ == cls._fields
    assert pickle.loads(pickle.dumps(record)) == record
    if any(f.default_factory is not dataclasses.MISSING for f in dataclasses.fields(cls)):
        assert cls(**args) == record  # a fresh default from the factory each time
        name = next(f.name for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING)
        assert getattr(cls(**args), name) is not getattr(record, name)


def test_analysis_spec_keeps_its_checks():
    from tsubaki_forensics.contracts.analysis import AnalysisSpec

    with pytest.raises(ValueError, match="must match"):
        AnalysisSpec("Bad Name", print, "d")
    with pytest.raises(TypeError, match="not callable"):
        AnalysisSpec("x", 3, "d")
    spec = AnalysisSpec("x", print, "d")
    with pytest.raises(ValueError, match="description"):
        dataclasses.replace(spec, description=" ")
