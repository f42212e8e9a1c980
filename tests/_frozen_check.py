"""One check that a :mod:`~tsubaki_forensics.contracts.frozen` record behaves as the dataclass it replaced.

Used by tests/test_frozen_records.py (contracts, plugin system, bridge) and
tests/test_tsd_frozen.py (the ``.tsd`` reader): each record is compared with a
dataclass made here from its ``__init__``'s fields and defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from tsubaki_forensics.contracts.frozen import Frozen

__all__ = ["as_dataclass", "check_frozen_record"]


def as_dataclass(record: Any, *, slots: bool = False, options: dict | None = None) -> Any:
    """A dataclass of the record's name, fields, defaults and ``dataclasses.field`` ``options``
    (frozen for a :class:`Frozen`, slotted if ``slots``), holding the record's values."""
    params = list(inspect.signature(type(record).__init__).parameters.values())[1:]
    assert [p.name for p in params] == list(record._fields)
    spec = []
    for p in params:
        kw = dict((options or {}).get(p.name, {}))
        if p.default is not p.empty:
            kw["default"] = p.default
        spec.append((p.name, object, dataclasses.field(**kw)) if kw else (p.name, object))
    cls = dataclasses.make_dataclass(type(record).__name__, spec, frozen=isinstance(record, Frozen), slots=slots)
    cls.__qualname__ = type(record).__qualname__
    return cls(**{name: getattr(record, name) for name in record._fields})


def check_frozen_record(record: Frozen, other: Frozen, *, slots: bool | None = None,
                        options: dict | None = None) -> None:
    """``record`` (and ``other``, one field changed) against its frozen dataclass: ``repr``,
    ``==``, ``hash`` (or unhashable alike), immutability, ``__match_args__``; with ``slots``
    given, also whether instances have a ``__dict__`` (as compact as the dataclass was)."""
    reference = as_dataclass(record, slots=bool(slots), options=options)
    reference_other = as_dataclass(other, slots=bool(slots), options=options)
    assert repr(record) == repr(reference)
    assert repr(other) == repr(reference_other)
    assert (record == other) == (reference == reference_other) is False
    same = type(record)(**{name: getattr(record, name) for name in record._fields})
    assert same == record and same is not record
    assert record != reference  # another class, as two dataclasses never compare equal
    try:
        expected = hash(reference)
    except TypeError:  # an unhashable field: unhashable, as the dataclass was
        with pytest.raises(TypeError):
            hash(record)
    else:
        assert hash(record) == expected == hash(same)
    name = record._fields[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, name, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(record, name)
    assert record.__match_args__ == record._fields
    if slots is not None:
        assert hasattr(record, "__dict__") is not slots
