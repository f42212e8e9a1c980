"""Analyses: how they are declared, what they return, and how they are run.

The bundled analyses live in ``plugins/tsubaki_plugins``; this package holds
the types every analysis shares.
"""

from .results import (
    AnalysisResult,
    Column,
    Completeness,
    Missing,
    NotCollected,
    Placeholder,
    Status,
    Table,
    Unreadable,
    Value,
    fact_key,
    is_placeholder,
)
from .runner import run_analyses, select
from .spec import AnalysisContext, AnalysisFunction, AnalysisOption, AnalysisSpec, Need

__all__ = [
    "AnalysisContext",
    "AnalysisFunction",
    "AnalysisOption",
    "AnalysisResult",
    "AnalysisSpec",
    "Column",
    "Completeness",
    "Missing",
    "Need",
    "NotCollected",
    "Placeholder",
    "Status",
    "Table",
    "Unreadable",
    "Value",
    "is_placeholder",
    "fact_key",
    "run_analyses",
    "select",
]
