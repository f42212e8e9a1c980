"""Classify every page of a dump at a makedumpfile dump level.

Why a classifier object: locating and reducing the struct pages is the
expensive part and does not depend on the level, while a writer, the
monitor and a report may ask for several levels of the same memory (level
31 to write, level 1 for a comparison); :class:`PageClassifier` does the
struct-page work once, remembers which pages it already found zero, and
answers each level with numpy alone.
"""

from __future__ import annotations

import numpy as np

from ..errors import PageClassError
from .features import Feature, PageFeatures
from .layout import DL_ZERO, LEVEL_BITS, PageLayout, page_layout
from .memmap import MemMapRange, read_features, section_mem_maps
from .memory import PhysicalReader, PresentRange, kernel_program, present_ranges
from .result import PageClass, PageClassification
from .rules import classify_struct_pages
from .zero import zero_pages

__all__ = ["PageClassifier", "classify", "MAX_PFNS"]

#: Highest pfn handled (16 TiB of 4 KiB pages): the per-pfn arrays cost ~8 bytes a pfn.
MAX_PFNS = 1 << 32


def _check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= LEVEL_BITS:
        raise PageClassError(f"dump level must be an integer from 0 to {LEVEL_BITS}, not {level!r}",
                             None)
    return level


class PageClassifier:
    """The pages of one dump: ``classify(level)`` for any level 0..31.

    :param memory: the dump's physical memory (:class:`.memory.PhysicalReader`).
    :param vmcoreinfo: the crashed kernel's VMCOREINFO text.
    :param prog: a drgn program that already reads this kernel's virtual
        addresses (the drgn bridge's); one is built from ``memory`` if not given.
    :raises PageClassError: no VMCOREINFO or no ``PAGESIZE`` in it.
    """

    def __init__(self, memory: PhysicalReader, vmcoreinfo: bytes | str | None, *, arch: str = "x86_64",
                 prog: object | None = None) -> None:
        self.memory = memory
        self.layout: PageLayout = page_layout(vmcoreinfo)
        self.vmcoreinfo = vmcoreinfo.encode() if isinstance(vmcoreinfo, str) else bytes(vmcoreinfo or b"")
        self.arch = arch
        self._prog = prog
        self.ranges: list[PresentRange] = present_ranges(memory)
        shift = self.layout.page_shift
        self.max_pfn = max((r.end >> shift for r in self.ranges), default=0)
        if self.max_pfn > MAX_PFNS:
            raise PageClassError(f"memory up to {self.max_pfn << shift:#x} is beyond what page "
                                 f"classification handles ({MAX_PFNS << shift:#x})", None)
        diff = np.zeros(self.max_pfn + 1, np.int32)
        for r in self.ranges:  # one entry per range: pages wholly inside one
            a, b = -(-r.start >> shift), r.end >> shift
            if a < b:
                diff[a] += 1
                diff[b] -= 1
        self.present = np.cumsum(diff[:-1]) > 0
        self._features: PageFeatures | None = None
        self._maps: list[MemMapRange] | None = None
        self._zero_known = np.zeros(self.max_pfn, bool)
        self._zero = np.zeros(self.max_pfn, bool)

    # -- struct pages -----------------------------------------------------------------

    @property
    def features(self) -> PageFeatures:
        """Per-pfn predicates from the struct pages (read on first use)."""
        if self._features is None:
            self._features = read_features(self._program_once(), self.layout, self.mem_maps,
                                           self.max_pfn)  # type: ignore[arg-type]
        return self._features

    @property
    def mem_maps(self) -> list[MemMapRange]:
        """Where the struct pages of each present memory section are."""
        if self._maps is None:
            self.layout.require_struct_pages()
            self._maps = section_mem_maps(self._program_once(), self.layout, self.max_pfn)  # type: ignore[arg-type]
        return self._maps

    @property
    def managed_end_pfn(self) -> int:
        """End of the last section with struct pages: makedumpfile's ``max_mapnr``.

        makedumpfile neither counts nor writes pages above it (QEMU's BIOS ROM
        at 0xfffc0000, say); we keep them (docs/FILTER.md).
        """
        return max((m.pfn_end for m in self.mem_maps), default=0)

    def _program_once(self) -> object:
        if self._prog is None:
            self._prog = self._program()
        return self._prog

    def _program(self) -> object:
        try:
            return kernel_program(self.memory, self.vmcoreinfo, arch=self.arch, page_size=self.layout.page_size)
        except KeyError:
            raise PageClassError(f"cannot classify pages of a {self.arch} dump (supported: x86_64, aarch64)",
                                 None) from None
        except ValueError as e:  # drgn: VMCOREINFO lacks what address translation needs
            raise PageClassError(f"cannot read the kernel's virtual memory: {e}", None) from None

    # -- one level ----------------------------------------------------------------------

    def classify(self, level: int) -> PageClassification:
        """Every pfn's :class:`.PageClass` at ``level``, counted as makedumpfile reports it.

        :raises PageClassError: the level needs a VMCOREINFO field the dump lacks
            (the message names it), or the struct pages cannot be located.
        """
        _check_level(level)
        self.layout.require(level)
        classes = np.zeros(self.max_pfn, np.uint8)
        free = np.zeros((0, 2), np.int64)
        unread = None
        if self.layout.walks_struct_pages(level):
            feat = self.features
            classes, free = classify_struct_pages(feat, level, free_area_orders=self.layout.free_area_orders,
                                                  present=self.present)
            unread = self.present & ((feat.bits & np.uint16(Feature.READ)) == 0)
        classes[~self.present] = PageClass.ABSENT
        if level & DL_ZERO:
            candidates = classes == PageClass.KEPT
            self._learn_zero(candidates & ~self._zero_known)
            classes[candidates & self._zero] = PageClass.ZERO
        keep = free[:, 0] < self.max_pfn
        free = free[keep]
        free = free[self.present[free[:, 0]]] if free.size else free
        return PageClassification(level, self.layout.page_size, classes, free, unread)

    def _learn_zero(self, todo: np.ndarray) -> None:
        if todo.any():
            self._zero |= zero_pages(self.memory, self.ranges, todo, self.layout.page_size)
            self._zero_known |= todo


def classify(memory: PhysicalReader, vmcoreinfo: bytes | str | None, level: int, *,
             arch: str = "x86_64", prog: object | None = None) -> PageClassification:
    """Classify every page of ``memory`` at ``level`` (one-shot :class:`PageClassifier`)."""
    _check_level(level)
    return PageClassifier(memory, vmcoreinfo, arch=arch, prog=prog).classify(level)
