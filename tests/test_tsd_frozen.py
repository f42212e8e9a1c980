"""The ``.tsd`` value classes behave as the frozen dataclasses they replaced.

Issue 21: ``tsd.records``, ``table``, ``completeness``, ``problems``,
``memory`` and ``reader`` defined 15 frozen dataclasses at every ``analyze``'s
import (~0.5 ms each); they are :class:`~tsubaki_forensics.contracts.frozen.Frozen`
records now.  Each is compared here with a dataclass made from its fields
and defaults (frozen, slotted where the old one was): same ``repr``
(``Memory`` hides its bytes), ``==``, ``hash`` (``Event``'s leaves out its
dict), immutability, ``__match_args__`` and pickling.
"""

from __future__ import annotations

import pickle
import uuid

import pytest
from _frozen_check import check_frozen_record

from tsubaki_forensics.tsd import records as R
from tsubaki_forensics.tsd.completeness import Completeness, Gap
from tsubaki_forensics.tsd.memory import Range, _Piece, _Source
from tsubaki_forensics.tsd.problems import Problem
from tsubaki_forensics.tsd.reader import Event
from tsubaki_forensics.tsd.table import RecordInfo

_ID = uuid.UUID(int=7)
_INFO = RecordInfo(1, 0, 128, 4144, 3, 0x1000, 4096)
_COMPLETE = dict(has_map=True, dump_level=1, map_bytes=8192, excluded_bytes=0, expected_bytes=8192,
                 present_bytes=4096, data_bytes=4096, zero_bytes=0, missing_bytes=4096, missing_exact=True,
                 outside_map_bytes=0, complete=False, percent=50.0, at_most_percent=None,
                 lower_bound_bytes=None, truncated=False, reason="half")

# (instance, another one, slotted before, {field: dataclasses.field options})
SAMPLES = [
    (R.ExcludedRange(0x1000, 0x2000, R.PageClass.USER), R.ExcludedRange(0x1000, 0x2000, R.PageClass.FREE),
     False, {}),
    (R.FileHeader(_ID, "x86_64", 4096, R.Endian.LITTLE, "p", 5),
     R.FileHeader(_ID, "x86_64", 4096, R.Endian.LITTLE, "p", 5, minor=R.FORMAT_MINOR_MAP), False, {}),
    (R.RecordHeader(1, 0, 24, 9, _ID, 1234, 128), R.RecordHeader(1, 0, 24, 9, _ID, 1234), False, {}),
    (R.IndexEntry(1, 0, 128, 0x1000, 4096), R.IndexEntry(1, 0, 128), True, {}),
    (R.MemoryMap(((0, 8192),), 31, ((0, 4096, 8),)), R.MemoryMap(((0, 8192),)), False, {}),
    (R.Memory(0x1000, 4096, 1, memoryview(b"abc")), R.Memory(0x1000, 4096, 0, memoryview(b"abc")),
     False, {"data": {"repr": False}}),
    (_INFO, RecordInfo(1, 0, 128, 4144), True, {}),
    (Problem("a.tsd", 128, "bad"), Problem("a.tsd", 129, "bad"), False, {}),
    (Gap(0x1000, 4096, "unreadable", "EIO"), Gap(0x1000, 4096, "absent"), False, {}),
    (Completeness(**_COMPLETE, gaps=(Gap(0, 4096, "absent"),)), Completeness(**_COMPLETE), False, {}),
    (Range(0x1000, 4096, "data"), Range(0x1000, 4096, "zero"), True, {}),
    (_Source(0, _INFO), _Source(1, _INFO), True, {}),
    (_Piece(0x1000, 0x2000, _Source(0, _INFO)), _Piece(0x1000, 0x1800, _Source(0, _INFO)), True, {}),
    (Event("panic", 1.5, {"a": 1}), Event("panic", 1.5, {"a": 2}), False, {"fields": {"hash": False}}),
]
_IDS = [type(s[0]).__name__ for s in SAMPLES]


@pytest.mark.parametrize("record, other, slots, options", SAMPLES, ids=_IDS)
def test_a_tsd_record_is_what_its_frozen_dataclass_was(record, other, slots, options):
    check_frozen_record(record, other, slots=slots, options=options)


@pytest.mark.parametrize("record, other, slots, options", [s for s in SAMPLES if not isinstance(s[0], R.Memory)],
                         ids=[i for s, i in zip(SAMPLES, _IDS) if not isinstance(s[0], R.Memory)])
def test_tsd_records_pickle(record, other, slots, options):
    assert pickle.loads(pickle.dumps(record)) == record  # a memoryview (Memory) never pickled


def test_completeness_json_keeps_every_field_and_the_gaps_as_dicts():
    c = Completeness(**_COMPLETE, gaps=(Gap(0, 4096, "absent"), Gap(4096, 4096, "unreadable", "EIO")))
    d = c.to_json()
    assert list(d) == [*Completeness._fields, "status"]
    assert d["status"] == "incomplete" and d["reason"] == "half"
    assert d["gaps"] == [{"start": 0, "length": 4096, "kind": "absent", "reason": ""},
                         {"start": 4096, "length": 4096, "kind": "unreadable", "reason": "EIO"}]
    assert c.to_json(gaps=False)["gaps"] == []
