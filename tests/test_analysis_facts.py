"""Analyses declare the facts they give, by key; results are held to them and
triage reads the panic's facts by key, never by the words people read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tsubaki_forensics.analysis import AnalysisContext, AnalysisResult, Status, fact_key, run_analyses, select
from tsubaki_forensics.errors import PluginError, TsubakiError
from tsubaki_forensics.plugin_system import Plugins, hookimpl
from tsubaki_forensics.render import json_renderer
from tsubaki_forensics.triage.scan import PANIC_FACTS, check_panic_facts


@pytest.fixture
def plugins():
    manager = Plugins.load(entry_points=False)
    names = []

    def add(obj, name):
        manager.pm.register(obj, name=name)
        names.append(name)

    manager.add = add
    yield manager
    for name in names:
        manager.pm.unregister(name=name)


def _analysis(plugins, result, facts):
    class Plugin:
        @hookimpl
        def tsubaki_register_analyses(self, register):
            register("count", lambda ctx: result, "counts things", facts=facts)

    plugins.add(Plugin(), "counter")
    (got,) = run_analyses(select(plugins.analyses(), only=["count"]), AnalysisContext(prog=None))
    return got


def test_a_fact_is_read_by_its_key_or_its_name():
    result = AnalysisResult("p", "P", facts=(("panicking CPU", 3), ("crashed pid", 7)))
    assert (result.fact("panicking_cpu"), result.fact("panicking CPU"), result.fact("crashed_pid")) == (3, 3, 7)
    with pytest.raises(KeyError):
        result.fact("panic_message")
    # JSON names facts by the same keys
    assert json_renderer.snake_case is fact_key and fact_key("LOAD AVERAGE") == "load_average"


def test_declared_facts_hold_the_result(plugins):
    ok = _analysis(plugins, AnalysisResult("count", "Count", facts=(("answer", 42),)), ["answer", "question"])
    assert ok.status is Status.OK and ok.fact("answer") == 42


def test_an_undeclared_fact_fails_the_analysis_naming_it(plugins):
    got = _analysis(plugins, AnalysisResult("count", "Count", facts=(("answer", 42), ("extra thing", 1))), ["answer"])
    assert got.status is Status.FAILED
    assert "'extra thing' (key 'extra_thing') is not among the facts it declares: answer" in got.error


def test_a_fact_key_must_be_a_key(plugins):
    class Plugin:
        @hookimpl
        def tsubaki_register_analyses(self, register):
            register("count", lambda ctx: None, "counts things", facts=["Panic Message"])

    plugins.add(Plugin(), "shouty")
    with pytest.raises(PluginError, match="plugin 'shouty'.*fact 'Panic Message' is not a key"):
        plugins.analyses()


def test_every_bundled_analysis_declares_its_facts():
    analyses = Plugins.load().analyses()
    bundled = [spec for spec in analyses.values() if spec.function.__module__.startswith("tsubaki_plugins.")]
    assert {"panic", "tasks", "dmesg", "sys"} <= {spec.name for spec in bundled}
    for spec in bundled:
        assert spec.facts, spec.name
        assert all(fact_key(key) == key for key in spec.facts), spec.name
    check_panic_facts(analyses["panic"])  # triage's facts are among the panic analysis's
    assert set(PANIC_FACTS) <= set(analyses["panic"].facts)


def test_triage_refuses_a_panic_analysis_without_its_facts():
    spec = Plugins.load().analyses()["panic"]
    with pytest.raises(TsubakiError, match="analysis 'panic' .* does not declare the facts triage reads: crashed_pid"):
        check_panic_facts(replace(spec, facts=tuple(k for k in spec.facts if k != "crashed_pid")))
    with pytest.raises(TsubakiError, match="no analysis 'panic' is registered"):
        check_panic_facts(None)
