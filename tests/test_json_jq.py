"""``analyze --format json`` survives jq: every address exact after a round trip.

jq 1.6 (Debian 12) and JavaScript read JSON numbers as doubles, so a 64-bit
kernel address written as a number comes back changed
(0xffffffffc0591230 -> 18446744072641647000).  Schema 2 writes addresses as
``"0x..."`` strings; this test pipes the sample's report through the real jq.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from _cli import CLI

EXACT = 2**53  # the largest integer range a double holds exactly


def _walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, node


@pytest.fixture(scope="module")
def report_text(tsubaki_sample_path):
    run = subprocess.run([*CLI, "analyze", str(tsubaki_sample_path), "--format", "json", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_no_number_a_double_cannot_hold(report_text):
    doc = json.loads(report_text)
    assert doc["schema_version"] == 2
    big = [(p, v) for p, v in _walk(doc) if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= EXACT]
    assert not big, big
    addresses = 0
    for analysis in doc["analyses"]:
        for table in analysis["tables"]:
            columns = [c["name"] for c in table["columns"] if c["type"] == "address"]
            for row in table["rows"]:
                assert set(row) == {c["name"] for c in table["columns"]}
                for c in columns:
                    if isinstance(row[c], str):
                        assert row[c].startswith("0x") and int(row[c], 16) >= 0
                        addresses += 1
        assert all(k == k.lower() and " " not in k for k in analysis["facts"])
    assert addresses > 0  # the sample has task and pc addresses


def test_jq_round_trip_keeps_every_address(report_text):
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed (apt-get install -y jq; .ci/run installs it)")
    for program in (".", "-c ."):
        out = subprocess.run([jq, *program.split()], input=report_text, capture_output=True, text=True, check=True).stdout
        assert json.loads(out) == json.loads(report_text)
    pcs = subprocess.run([jq, "-r", '.analyses[] | select(.name == "panic") | .tables[0].rows[].pc'],
                         input=report_text, capture_output=True, text=True, check=True).stdout.split()
    doc = json.loads(report_text)
    (panic,) = [a for a in doc["analyses"] if a["name"] == "panic"]
    assert pcs == [r["pc"] for r in panic["tables"][0]["rows"]] and all(p.startswith("0xffff") for p in pcs)
