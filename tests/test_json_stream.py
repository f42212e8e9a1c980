"""``print_json`` with :class:`JsonStream` values: the same document, written as it is made.

Why: ``inspect --format json`` of a dump of a million records used to build
a dict per range and the whole text at once (1.2 GiB, issue 22); the ranges
are now a stream.  The document must still parse to what ``json.dumps``
would have written, and output without a stream must not change at all.
"""

from __future__ import annotations

import json

from tsubaki_forensics.cli.output import JsonStream, print_json


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
