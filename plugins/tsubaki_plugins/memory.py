"""``memory``: the memory summary of crash's ``kmem -i``.

The figures are computed as drgn's own crash ``kmem -i`` computes them
(``drgn.commands._crash._kmem``), with the same drgn helpers:
``totalram_pages``, ``nr_free_pages``, ``nr_blockdev_pages`` (buffers),
``NR_FILE_PAGES`` minus swap cache minus buffers (cached),
``slab_total_usage``, ``hugetlb_total_usage``, ``swap_total_usage``,
``vm_commit_limit`` and ``vm_memory_committed``.  Every figure is read on
its own, so one that cannot be read (a page of the vmstat counters not
collected, a helper that does not know this kernel) is a placeholder in
its row and the others still show.  A percentage is of the row's total
(``TOTAL MEM``, ``TOTAL HUGE``, ``TOTAL SWAP``, ``COMMIT LIMIT``), as in
crash.  For an OOM panic this is the first thing to read: ``FREE`` near
zero, ``SWAP`` full or absent, ``COMMITTED`` past the limit.
"""

# No ``from __future__ import annotations`` here: typing.NamedTuple would compile
# each field's annotation string on every import (issue 21, docs/PLUGINS.md).

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import drgn
from drgn.helpers.linux.block import nr_blockdev_pages
from drgn.helpers.linux.hugetlb import hugetlb_total_usage
from drgn.helpers.linux.mm import totalram_pages, vm_commit_limit, vm_memory_committed
from drgn.helpers.linux.slab import slab_total_usage
from drgn.helpers.linux.swap import swap_total_usage, total_swapcache_pages
from drgn.helpers.linux.vmstat import global_node_page_state, nr_free_pages

from tsubaki_forensics.analysis import (
    AnalysisContext,
    AnalysisResult,
    Column,
    Completeness,
    Missing,
    Need,
    NotCollected,
    Table,
    Value,
    is_placeholder,
)
from tsubaki_forensics.analysis.guard import read_value
from tsubaki_forensics.plugin_system import hookimpl

__all__ = ["KMEM_ROWS", "Figure", "read_figures", "memory_result", "analyze"]

T = TypeVar("T")


class Figure(NamedTuple):
    """One row of ``kmem -i``: its label, pages, and the label of the total it is a share of."""

    label: str
    pages: Value
    of: str | None = None


#: crash's rows in its order, each with the total its percentage is of (None: a total itself).
KMEM_ROWS: tuple[tuple[str, str | None], ...] = (
    ("TOTAL MEM", None), ("FREE", "TOTAL MEM"), ("USED", "TOTAL MEM"), ("BUFFERS", "TOTAL MEM"),
    ("CACHED", "TOTAL MEM"), ("SLAB", "TOTAL MEM"),
    ("TOTAL HUGE", None), ("HUGE FREE", "TOTAL HUGE"),
    ("TOTAL SWAP", None), ("SWAP USED", "TOTAL SWAP"), ("SWAP FREE", "TOTAL SWAP"),
    ("COMMIT LIMIT", None), ("COMMITTED", "COMMIT LIMIT"),
)


def _once(read: Callable[[], T]) -> Callable[[], T]:
    """``read`` called at most once when it succeeds (several rows share one helper's answer)."""
    done: list[T] = []

    def get() -> T:
        if not done:
            done.append(read())
        return done[0]

    return get


def _getters(prog: drgn.Program) -> dict[str, Callable[[], int]]:
    """How drgn's ``kmem -i`` computes each row; each helper runs once for all the rows that use it."""
    total = _once(lambda: totalram_pages(prog))
    free = _once(lambda: nr_free_pages(prog))
    buffers = _once(lambda: nr_blockdev_pages(prog))
    huge = _once(lambda: hugetlb_total_usage(prog))
    swap = _once(lambda: swap_total_usage(prog))
    return {
        "TOTAL MEM": total,
        "FREE": free,
        "USED": lambda: total() - free(),
        "BUFFERS": buffers,
        "CACHED": lambda: (global_node_page_state(prog["NR_FILE_PAGES"]) - total_swapcache_pages(prog) - buffers()),
        "SLAB": lambda: slab_total_usage(prog).total_pages,
        "TOTAL HUGE": lambda: huge().pages,
        "HUGE FREE": lambda: huge().free_pages,
        "TOTAL SWAP": lambda: swap().pages,
        "SWAP USED": lambda: swap().used_pages,
        "SWAP FREE": lambda: swap().free_pages,
        "COMMIT LIMIT": lambda: vm_commit_limit(prog),
        "COMMITTED": lambda: vm_memory_committed(prog),
    }


def read_figures(prog: drgn.Program) -> tuple[list[Figure], Value]:
    """Every ``kmem -i`` figure in pages (placeholders where unreadable), and the page size."""
    getters = _getters(prog)
    figures = [Figure(label, read_value(getters[label]), of) for label, of in KMEM_ROWS]
    return figures, read_value(lambda: prog["PAGE_SIZE"].value_())


_COLUMNS = (
    Column("item", "", str),
    Column("pages", "PAGES", int, "right"),
    Column("bytes", "TOTAL", int, "right", "bytes"),
    Column("percent", "PERCENTAGE", float, "right"),
    Column("of", "OF", str),
)


def memory_result(figures: Sequence[Figure], page_size: Value) -> AnalysisResult:
    """Pure: the ``memory`` result; ``percent`` is of the row's total (unrounded; crash shows it rounded)."""
    pages = {f.label: f.pages for f in figures}
    rows = []
    for f in figures:
        size: Value = f.pages * page_size if isinstance(f.pages, int) and isinstance(page_size, int) else None
        if is_placeholder(f.pages):
            size = f.pages
        total = pages.get(f.of) if f.of else None
        percent: Value = None
        if isinstance(f.pages, int) and isinstance(total, int):
            percent = f.pages / total * 100 if total else 0.0
        rows.append((f.label, f.pages, size, percent, f.of))
    missing = tuple(Missing(f.label, getattr(f.pages, "address", None), isinstance(f.pages, NotCollected), "figure")
                    for f in figures if is_placeholder(f.pages))
    facts: list[tuple[str, Value]] = [("page size", page_size)]
    return AnalysisResult(
        name="memory",
        title="Memory (kmem -i)",
        facts=tuple(facts),
        tables=(Table.build("kmem", "Memory summary", _COLUMNS, rows),),
        completeness=(Completeness("figures", len(figures) - len(missing), len(figures), missing),),
    )


def analyze(ctx: AnalysisContext) -> AnalysisResult:
    """Read the ``kmem -i`` figures of ``ctx.prog`` and build the result."""
    return memory_result(*read_figures(ctx.prog))


@hookimpl
def tsubaki_register_analyses(register) -> None:  # type: ignore[no-untyped-def]
    """Register ``memory``."""
    register("memory", analyze, "memory summary: total, free, used, buffers, cached, slab, huge pages, swap, "
             "commit (crash's kmem -i)", needs=[Need.DEBUG_INFO],
             facts=["page_size"])
