"""``print_json`` with :class:`JsonStream` values: the same document, written as it is made.

Why: ``inspect --format json`` of a dump of a million records used to build
a dict per range and the whole text at once (1.2 GiB, issue 22); the ranges
are now a stream.  The document must still parse to what ``json.dumps``
would have written, and output without a stream must not change at all.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tsubaki_forensics.cli.output import JsonStream, print_json
from tsubaki_forensics.render.json_stream import dumps_indented


def _doc():
    return {"a": 1, "nested": {"ranges": [{"start": 0}], "s": "x\ny\u202e"}, "empty": {}, "list": [], "n": None}


def test_output_without_a_stream_is_byte_for_byte_json_dumps(capsys):
    print_json(_doc())
    assert capsys.readouterr().out == json.dumps(_doc(), indent=2) + "\n"


def test_streams_parse_to_the_same_document(capsys):
    items = [{"start": i * 8192, "length": 4096, "kind": "zero" if i % 3 else "data"} for i in range(10_000)]
    doc = {**_doc(), "memory": {"before": [1, {"x": 2}], "ranges": JsonStream(iter(items)),
                                "missing": JsonStream(iter([])), "after": {"k": "v"}}}
    print_json(doc)
    out = capsys.readouterr().out
    expected = {**_doc(), "memory": {"before": [1, {"x": 2}], "ranges": items, "missing": [],
                                     "after": {"k": "v"}}}
    assert json.loads(out) == expected
    lines = out.splitlines()
    # one compact item per line, indented under its key, in order
    assert lines.count('      {"start": 0, "length": 4096, "kind": "data"},') == 1
    assert sum(1 for ln in lines if ln.lstrip().startswith('{"start"')) == len(items)
    assert out.endswith("}\n")


def test_a_generator_is_consumed_lazily_once(capsys):
    made = []

    def gen():
        for i in range(3):
            made.append(i)
            yield {"i": i}

    print_json({"xs": JsonStream(gen())})
    assert made == [0, 1, 2]
    assert json.loads(capsys.readouterr().out) == {"xs": [{"i": 0}, {"i": 1}, {"i": 2}]}


# ``dumps_indented`` (analyze's JSON renderer, issue 21) is json.dumps(indent=2, ensure_ascii=False), byte for byte.
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_dumps_indented_is_json_dumps(value):
    assert dumps_indented(value) == json.dumps(value, indent=2, ensure_ascii=False)


def test_dumps_indented_leaves_the_rest_to_json_dumps():
    odd = {"k": {1: "int key", 2.5: [True], None: ()}}  # keys JSON turns into strings
    assert dumps_indented(odd) == json.dumps(odd, indent=2, ensure_ascii=False)
    for bad in ({"x": object()}, {("t",): 1}):
        try:
            json.dumps(bad, indent=2, ensure_ascii=False)
        except TypeError as expected:
            try:
                dumps_indented(bad)
            except TypeError as got:
                assert str(got) == str(expected)
            else:
                raise AssertionError("no error")
    cycle: list = []
    cycle.append(cycle)
    try:
        dumps_indented(cycle)
    except ValueError as e:
        assert "Circular" in str(e)
    else:
        raise AssertionError("a cycle was written")
