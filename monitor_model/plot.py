"""The timeline plot: memory owned by Linux, bytes saved, events over time.

Drawn with matplotlib (Agg backend, no display needed); the file type comes
from the extension (``.png``, ``.svg``, ``.pdf``).  One line per policy on
shared axes, so ``--compare`` shows at a glance when each policy gives the
service back and how long the evidence takes to be safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tsubaki_forensics.contracts.events import EventKind
from tsubaki_forensics.errors import TsubakiError

__all__ = ["plot_timeline", "check_plot_path", "PLOT_SUFFIXES"]

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_path(path: str | Path) -> Path:
    """Refuse a file type matplotlib would not write, before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise TsubakiError(f"--plot {path}: use a .png, .svg or .pdf file name")
    return path

_MARKS = {
    EventKind.REBOOT_START: ("^", "reboot starts"),
    EventKind.RESTART: ("o", "service restart"),
    EventKind.DUMP_COMPLETE: ("s", "dump complete"),
}


def _steps(points: list[tuple[float, int]], end: float) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for t, v in sorted(points):
        xs.append(t)
        ys.append(v / (1 << 20))
    xs.append(max(end, xs[-1]))
    ys.append(ys[-1])
    return xs, ys


def plot_timeline(results: Sequence, path: str | Path, title: str | None = None) -> Path:
    """Draw the results' timelines to ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_plot_path(path)
    end = max(
        max(r.restart_s, r.full_memory_s, r.dump_complete_s or 0.0) for r in results
    ) * 1.05 or 1.0
    fig, (owned_ax, saved_ax) = plt.subplots(2, 1, sharex=True, figsize=(9, 6.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(results):
        color = colors[i % len(colors)]
        xs, ys = _steps(r.timeline.owned, end)
        owned_ax.step(xs, ys, where="post", color=color, label=r.policy)
        xs, ys = _steps(r.timeline.saved, end)
        saved_ax.step(xs, ys, where="post", color=color, label=r.policy)
        for kind, (marker, _) in _MARKS.items():
            for event in r.timeline.of_kind(kind):
                on_owned = kind != EventKind.DUMP_COMPLETE
                axis = owned_ax if on_owned else saved_ax
                series = r.timeline.owned if on_owned else r.timeline.saved
                y = max((v for t, v in series if t <= event.time), default=0) / (1 << 20)
                axis.plot([event.time], [y], marker=marker, color=color, markersize=7)
        for start, stop in r.stalls:
            owned_ax.axvspan(start, min(stop, end), color=color, alpha=0.12)
    owned_ax.set_ylabel("memory owned by Linux (MiB)")
    saved_ax.set_ylabel("dump bytes saved (MiB)")
    saved_ax.set_xlabel("emulated seconds since the panic")
    owned_ax.legend(loc="lower right", fontsize="small")
    owned_ax.set_title(title or "Tsubaki monitor emulation: ^ = reboot, o = service restart, "
                       "s = dump complete, shaded = stall", fontsize="medium")
    for ax in (owned_ax, saved_ax):
        ax.grid(alpha=0.3)
        ax.set_xlim(0, end)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise TsubakiError(f"--plot {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path
