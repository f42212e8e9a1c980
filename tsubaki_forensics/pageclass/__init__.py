"""Page classes from the crashed kernel's own struct pages: makedumpfile's dump levels.

Each pfn of a dump is kept or left out as makedumpfile would at a dump level
(bits: 1 zero, 2 non-private cache, 4 private cache, 8 user data, 16 free;
hwpoison and offline pages always), decided from the kernel's ``struct page``
array located through VMCOREINFO and read through drgn, vectorised with numpy.
The rules, and every place they differ from makedumpfile: docs/FILTER.md.

    classifier = PageClassifier(memory, vmcoreinfo)   # memory: read(paddr, size), ranges()
    result = classifier.classify(31)
    result.counts()        # {"zero": .., "cache": .., "cache_private": .., "user": .., ...}
    result.excluded_runs() # (pfn, count, PageClass) runs for a writer
"""

from .classify import PageClassifier, classify
from .layout import DL_CACHE, DL_CACHE_PRIVATE, DL_FREE, DL_USER, DL_ZERO, PageLayout, page_layout
from .memory import PhysicalReader, PresentRange, kernel_program, present_ranges
from .result import COUNT_KEYS, ExcludedRun, PageClass, PageClassification

__all__ = [
    "COUNT_KEYS",
    "DL_CACHE",
    "DL_CACHE_PRIVATE",
    "DL_FREE",
    "DL_USER",
    "DL_ZERO",
    "ExcludedRun",
    "PageClass",
    "PageClassification",
    "PageClassifier",
    "PageLayout",
    "PhysicalReader",
    "PresentRange",
    "classify",
    "kernel_program",
    "page_layout",
    "present_ranges",
]
