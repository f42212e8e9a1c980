"""The built-in memory sources for ``collect``, registered as a plugin.

This module is the entry point ``memory-sources`` of the ``tsubaki_forensics``
group: it implements ``tsubaki_register_sources(register)`` like any
third-party plugin would, so the plugin path is exercised on every run.

* ``vmcore``: an ELF vmcore (QEMU ``dump-guest-memory``, kdump ``/proc/vmcore``),
  read with :class:`tsubaki_forensics.vmcore.ElfVmcore`.
* ``kdump``: makedumpfile's kdump-compressed or flattened file, or any dump
  file in gzip/bzip2/xz/lz4, opened as every command opens it
  (:func:`tsubaki_forensics.vmcore.foreign.open_foreign`, by magic); the
  pages its dump level left out are not in ``ranges``.
* ``lab``: a crash-lab scenario (``lab``, ``lab:sysrq``,
  ``lab:sysrq,mem=2G,workload=busy``): a real Debian kernel panicked under
  QEMU by :mod:`tsubaki_forensics.lab`; the default source of ``collect``.
  It carries the guest's measured boot time and its vmlinux.
* ``raw``: a raw memory image with a sidecar ``IMAGE.json`` giving its
  physical ranges, VMCOREINFO and notes (docs/COLLECT.md).

A live QEMU guest is not a source of this emulation: `tsubaki-forensics monitor` (tsubaki_forensics/live/) runs the protocol on the real guest itself.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

from tsubaki_forensics.contracts.frozen import Frozen
from tsubaki_forensics.errors import NotCollectedError, SourceError, TsubakiError
from tsubaki_forensics.plugin_system import hookimpl

__all__ = [
    "SourceType",
    "MemorySource",
    "VmcoreSource",
    "RawImageSource",
    "DumpFileSource",
    "container_kind",
    "BytesSource",
    "SOURCE_TYPES",
    "tsubaki_register_sources",
    "open_source",
    "lab_boot_seconds",
    "DEFAULT_SOURCE",
]

DEFAULT_SOURCE = "lab:sysrq"
BULK_READ = 1 << 20  # reads this large are the engine's sequential pass
_ELF_MAGIC = b"\x7fELF"
# Containers that are not raw memory: (offset, magic, what it is).  A raw
# image that starts with one of these is almost surely that container read
# as bytes, which would give a dump of headers and compressed pages.
_CONTAINER_MAGICS = (
    (0, _ELF_MAGIC, "an ELF file (use --source-type vmcore)"),
    (0, b"KDUMP   ", "a makedumpfile kdump-compressed dump (use --source-type kdump)"),
    (0, b"DISKDUMP", "a diskdump-compressed dump"),
    (0, b"makedumpfile", "a makedumpfile flattened dump (use --source-type kdump)"),
    (0, b"\x89TSD\r\n\x1a\n", "a .tsd dump already (analyze or inspect it)"),
)


class SourceType(Frozen):
    """One kind of memory source, as registered through the hook.

    A :class:`~tsubaki_forensics.contracts.frozen.Frozen` record, not a
    ``@dataclass``: this module is imported by every command that loads the
    plugins, ``analyze`` included (issue 21).
    """

    _fields = ("name", "description", "open", "probe")
    name: str
    description: str
    open: Callable[[str], object]
    probe: Callable[[str], bool]

    def __init__(self, name: str, description: str, open: Callable[[str], object],
                 probe: Callable[[str], bool]) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "name", name)
        setattr_(self, "description", description)
        setattr_(self, "open", open)
        setattr_(self, "probe", probe)


class MemorySource:
    """Base of the built-in sources (the protocol of docs/ARCHITECTURE.md)."""

    name = "?"
    ranges: list[tuple[int, int]]
    vmcoreinfo: bytes | None = None
    notes: bytes | None = None
    properties: dict[str, str]
    arch: str = "x86_64"  # the crashed machine's, as the .tsd header names it

    def read(self, paddr: int, size: int) -> bytes:
        raise NotImplementedError

    def read_into(self, paddr: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes at ``paddr`` (same errors as :meth:`read`).

        Why: the monitor's write path reads every byte of memory once in
        8 MiB windows; filling one reused buffer costs no new block per window
        (issue 21).  The built-in sources read straight into ``view``; this
        default copies what :meth:`read` returns.
        """
        data = self.read(paddr, len(view))
        if len(data) != len(view):
            raise SourceError(f"short read at {paddr:#x}: {len(data)} of {len(view)} bytes")
        view[:] = data

    def close(self) -> None:
        """Release files."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VmcoreSource(MemorySource):
    """An ELF vmcore on disk."""

    def __init__(self, path: str | os.PathLike[str], properties: dict | None = None) -> None:
        from tsubaki_forensics.vmcore import ElfVmcore

        self.path = Path(path)
        self.name = str(self.path)
        self._core = ElfVmcore(self.path)
        self.ranges = _segment_ranges(self._core.segments)
        self.vmcoreinfo = _bytes(self._core.vmcoreinfo)
        self.notes = _bytes(self._core.notes)
        self.arch = self._core.arch
        self.properties = {"source": "vmcore", "vmcore": str(self.path), **(properties or {})}

    def read(self, paddr: int, size: int) -> bytes:
        try:
            data = self._core.read(paddr, size)
        except NotCollectedError as e:
            raise SourceError(f"physical address {e.address:#x} is not in {self.path}") from None
        if size >= BULK_READ:
            self._release(paddr, size)
        return data

    def read_into(self, paddr: int, view: memoryview) -> None:
        try:
            self._core.read_into(paddr, view)
        except NotCollectedError as e:
            raise SourceError(f"physical address {e.address:#x} is not in {self.path}") from None

    def _release(self, paddr: int, size: int) -> None:
        """Drop the vmcore's mapped pages behind a bulk read: the dump reads
        every byte once, so keeping them resident only grows the RSS."""
        for start, length in self.ranges:
            lo, hi = max(start, paddr), min(start + length, paddr + size)
            if lo < hi:
                try:
                    self._core.release(lo, hi - lo)
                except NotCollectedError:
                    continue

    def close(self) -> None:
        close = getattr(self._core, "close", None)
        if close:
            close()


class DumpFileSource(MemorySource):
    """A kdump-compressed, flattened or wrapped dump file: the pages it holds."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from tsubaki_forensics.vmcore.foreign import open_foreign

        self.path = Path(path)
        self.name = str(self.path)
        self._dump = open_foreign([self.path])
        self.ranges = _segment_ranges([(r.start, r.length) for r in self._dump.memory.ranges()])
        self.vmcoreinfo = _bytes(self._dump.vmcoreinfo)
        self.notes = _bytes(self._dump.notes)
        self.properties = {**self._dump.properties, "source": "kdump", "dump": str(self.path)}

    def read(self, paddr: int, size: int) -> bytes:
        try:
            return self._dump.memory.read(paddr, size)
        except NotCollectedError as e:
            raise SourceError(f"{self.path}: {e}") from None

    def close(self) -> None:
        self._dump.close()


def _probe_dump_file(spec: str) -> bool:
    from tsubaki_forensics.vmcore.detect import is_dump_file, sniff

    try:
        return is_dump_file(spec) and sniff(spec) not in ("elf", "tsd")
    except TsubakiError:
        return False


class RawImageSource(MemorySource):
    """A raw physical-memory image plus its sidecar JSON.

    Sidecar ``IMAGE.json``: ``{"ranges": [{"paddr", "length", "offset"}],
    "vmcoreinfo": text, "notes_base64": str, "arch": "x86_64" or "aarch64",
    "properties": {...}}``; without
    ``ranges`` the whole file is physical memory from address 0.

    The sidecar is required: raw bytes alone say nothing of where they
    belong, and a file that starts with an ELF, kdump or ``.tsd`` magic is
    refused, since reading a container as memory writes a dump no analysis
    can use (:func:`container_kind`).
    """

    def __init__(self, path: str | os.PathLike[str], sidecar: Path | None = None) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        sidecar = sidecar or _sidecar(self.path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise SourceError(f"cannot open raw image {self.path}: {e.strerror}") from None
        size = os.fstat(self._fd).st_size
        kind = container_kind(os.pread(self._fd, _HEAD, 0))
        if kind is not None:
            os.close(self._fd)
            raise SourceError(f"{self.path} is {kind}, not a raw memory image")
        if not sidecar.is_file():
            os.close(self._fd)
            raise SourceError(f"{self.path}: a raw image needs its sidecar {sidecar} "
                              "(physical ranges, VMCOREINFO; docs/COLLECT.md)")
        try:
            meta = json.loads(sidecar.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            os.close(self._fd)
            raise SourceError(f"{sidecar}: not a readable JSON sidecar ({e})") from None
        rows = meta.get("ranges") or [{"paddr": 0, "length": size, "offset": 0}]
        try:
            self._map = sorted((int(r["paddr"]), int(r["length"]), int(r.get("offset", r["paddr"]))) for r in rows)
        except (KeyError, TypeError, ValueError) as e:
            os.close(self._fd)
            raise SourceError(f"{sidecar}: bad range entry ({e})") from None
        for paddr, length, offset in self._map:
            if offset < 0 or length <= 0 or offset + length > size:
                os.close(self._fd)
                raise SourceError(f"{sidecar}: range {paddr:#x}+{length:#x} is outside {self.path} ({size} bytes)")
        self.ranges = [(p, n) for p, n, _ in self._map]
        info = meta.get("vmcoreinfo")
        self.vmcoreinfo = info.encode() if isinstance(info, str) else None
        notes = meta.get("notes_base64")
        self.notes = base64.b64decode(notes) if notes else None
        if isinstance(meta.get("arch"), str):
            self.arch = meta["arch"]
        self.properties = {"source": "raw", "image": str(self.path),
                           **{str(k): str(v) for k, v in (meta.get("properties") or {}).items()}}

    def read(self, paddr: int, size: int) -> bytes:
        return _read_through(self, paddr, size)

    def read_into(self, paddr: int, view: memoryview) -> None:
        """:meth:`read` with ``preadv`` straight into ``view`` (no block, no copies)."""
        view = memoryview(view).cast("B")
        pos, end, at = paddr, paddr + len(view), 0
        for start, length, offset in self._map:
            if pos >= end:
                break
            if start <= pos < start + length:
                n = min(end, start + length) - pos
                got = 0
                while got < n:
                    k = os.preadv(self._fd, [view[at + got:at + n]], offset + pos - start + got)
                    if k <= 0:
                        raise SourceError(f"{self.path} ends inside physical {pos:#x}+{n:#x}")
                    got += k
                at += n
                pos += n
        if pos < end:
            raise SourceError(f"physical address {pos:#x} is not in {self.path}")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class BytesSource(MemorySource):
    """Memory held in a Python buffer, for callers (and tests) that built it.

    ``ranges`` are ``(paddr, length)``; the buffer holds them back to back.
    """

    def __init__(self, data, ranges: list[tuple[int, int]] | None = None, *,
                 vmcoreinfo: bytes | None = None, notes: bytes | None = None,
                 properties: dict | None = None, name: str = "memory") -> None:
        self.name = name
        self._data = memoryview(data).cast("B")
        self.ranges = sorted(ranges or [(0, len(self._data))])
        if sum(n for _, n in self.ranges) != len(self._data):
            raise SourceError("BytesSource: the ranges do not add up to the buffer size")
        self._offsets, pos = [], 0
        for _, length in self.ranges:
            self._offsets.append(pos)
            pos += length
        self.vmcoreinfo, self.notes = vmcoreinfo, notes
        self.properties = dict(properties or {})

    def read(self, paddr: int, size: int) -> bytes:
        return _read_through(self, paddr, size)

    def read_into(self, paddr: int, view: memoryview) -> None:
        view = memoryview(view).cast("B")
        pos, end, at = paddr, paddr + len(view), 0
        for (start, length), offset in zip(self.ranges, self._offsets):
            if pos < end and start <= pos < start + length:
                n = min(end, start + length) - pos
                view[at:at + n] = self._data[offset + pos - start:offset + pos - start + n]
                at += n
                pos += n
        if pos < end:
            raise SourceError(f"physical address {pos:#x} is not in {self.name}")


def _read_through(source: MemorySource, paddr: int, size: int) -> bytes:
    """``read`` of a source whose ``read_into`` walks its ranges: one walk, not two."""
    buf = bytearray(size)
    source.read_into(paddr, memoryview(buf))
    return bytes(buf)


_HEAD = max(offset + len(magic) for offset, magic, _ in _CONTAINER_MAGICS)


def container_kind(head: bytes) -> str | None:
    """Pure: what container ``head`` (a file's first bytes) starts like, or ``None`` for none."""
    for offset, magic, kind in _CONTAINER_MAGICS:
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _bytes(value) -> bytes | None:
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)


def _segment_ranges(segments) -> list[tuple[int, int]]:
    """(paddr, size) of the vmcore's memory segments, merged where adjacent."""
    out: list[tuple[int, int]] = []
    for seg in segments:
        if isinstance(seg, tuple):
            paddr, size = seg[0], seg[1]
        else:
            paddr = getattr(seg, "paddr", None)
            if paddr is None:
                paddr = getattr(seg, "start")
            size = getattr(seg, "size", None)
            if size is None:
                size = getattr(seg, "length")
        if size <= 0:
            continue
        if out and out[-1][0] + out[-1][1] == paddr:
            out[-1] = (out[-1][0], out[-1][1] + size)
        else:
            out.append((paddr, size))
    return sorted(out)


# -- crash lab ------------------------------------------------------------------


def parse_lab_spec(spec: str) -> dict[str, str]:
    """``lab:sysrq,mem=2G,workload=busy`` -> keyword arguments of ``lab.crash``."""
    body = spec[len("lab"):].lstrip(":")
    kwargs: dict[str, str] = {}
    for i, item in enumerate(filter(None, body.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            if i:
                raise SourceError(f"{spec!r}: expected key=value after the scenario, got {item!r}")
            kwargs["scenario"] = key
            continue
        if key not in ("scenario", "mem", "smp", "workload", "kernel"):
            raise SourceError(f"{spec!r}: unknown crash-lab parameter {key!r}")
        kwargs[key] = value
    if "smp" in kwargs:
        try:
            kwargs["smp"] = int(kwargs["smp"])
        except ValueError:
            raise SourceError(f"{spec!r}: smp must be a number") from None
    return kwargs


def lab_boot_seconds(ground_truth: dict) -> float | None:
    """Kernel start to the guest's user space at work, in the guest's own log.

    The lab init's ``tsubaki-lab: starting workload`` line marks user space
    running; ``Run /init`` (kernel handing over to init) is the fallback.  The
    firmware is not counted: the monitor starts the kernel directly.
    """
    lines = ground_truth.get("dmesg", [])
    for marker in ("tsubaki-lab: starting workload", "Run /init"):
        for line in lines:
            if marker in line.get("text", ""):
                return float(line["time"])
    return None


def open_lab(spec: str) -> VmcoreSource:
    """Crash a lab guest (cached) and open its vmcore."""
    from tsubaki_forensics import lab

    result = lab.cached_crash(**parse_lab_spec(spec))
    props = {"source": "lab", "lab": spec, "vmlinux": str(result.vmlinux)}
    boot = lab_boot_seconds(result.ground_truth or {})
    if boot is not None:
        props["boot_s"] = f"{boot:.3f}"
    manifest = result.manifest or {}
    for key in ("scenario", "mem", "smp", "workload", "kernel_release"):
        if key in manifest:
            props[f"lab.{key}"] = str(manifest[key])
    source = VmcoreSource(result.vmcore, props)
    source.name = spec
    return source


def _probe_elf(spec: str) -> bool:
    try:
        with open(spec, "rb") as f:
            return f.read(4) == _ELF_MAGIC
    except OSError:
        return False


def _probe_raw(spec: str) -> bool:
    path = Path(spec)
    return path.is_file() and _sidecar(path).is_file() and not _probe_elf(spec)


SOURCE_TYPES = (
    SourceType("vmcore", "an ELF vmcore (QEMU dump-guest-memory, kdump /proc/vmcore)",
               VmcoreSource, _probe_elf),
    SourceType("kdump", "makedumpfile's kdump-compressed or flattened file, or a dump in "
               "gzip/bzip2/xz/lz4 (by magic)", DumpFileSource, _probe_dump_file),
    SourceType("lab", "a crash-lab scenario: lab[:SCENARIO][,mem=512M][,smp=2][,workload=idle|busy]",
               open_lab, lambda spec: spec == "lab" or spec.startswith("lab:")),
    SourceType("raw", "a raw memory image with a sidecar IMAGE.json (ranges, vmcoreinfo, notes)",
               RawImageSource, _probe_raw),
)


@hookimpl
def tsubaki_register_sources(register) -> None:
    """Register the built-in sources."""
    for source_type in SOURCE_TYPES:
        register(source_type)


def open_source(spec: str | None, kind: str | None = None):
    """Open ``spec`` with the registered source named ``kind``, or the first
    whose probe accepts it; ``None`` opens the default crash-lab scenario."""
    from tsubaki_forensics.plugin_system import sources

    spec = spec or DEFAULT_SOURCE
    registered = sources()
    if kind is not None:
        if kind not in registered:
            raise TsubakiError(f"unknown source type {kind!r}; registered: {', '.join(registered)}")
        return registered[kind].factory(spec)
    for entry in registered.values():
        if entry.probe is not None and entry.probe(spec):
            return entry.factory(spec)
    if not os.path.exists(spec):
        raise SourceError(f"{spec}: no such file (and not a crash-lab spec like lab:sysrq)")
    raise SourceError(f"{spec}: not a memory source I know ({', '.join(registered)}); "
                      "a raw image needs a sidecar IMAGE.json")
