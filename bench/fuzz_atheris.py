"""Coverage-guided fuzzing (atheris, libFuzzer) of every reader of untrusted bytes.

Targets: ``elf`` (ElfVmcore: header, program headers, notes, reads),
``kdump`` (KdumpFile: makedumpfile's kdump-compressed format and its
flattened form, headers, bitmaps, page descriptors, page codecs),
``tsd`` (open by footer and by scan, read what it claims, verify),
``symbolpack`` (decode_pack) and ``json`` (limits.load_json, which every
JSON reader goes through).

The seed corpus comes from a real lab crash (the cached default crash, made
on first use): a prefix of its vmcore and a small ELF exported from its
first pages with its real notes and VMCOREINFO; prefixes of Debian's
``makedumpfile -c -d 31`` and ``-F -l -d 31`` output for it (made at run
time from a /proc/vmcore-style copy, as the lab does); prefixes of its ``.tsd``
import; a symbol pack cut from its vmlinux down to a few entries; plus the
tests' synthetic samples (a small kdump file built by tests/kdump_synth.py,
plain and flattened, with each page codec).  A crash is any exception that is not a
``TsubakiError`` (one-line message checked), or RSS past ``-rss_limit_mb``.

    python bench/fuzz_atheris.py --runs 250000            # every target, in turn
    python bench/fuzz_atheris.py --target tsd --runs 1000 # one target
    python bench/fuzz_atheris.py --target elf=150000 --target json=350000
    nice -n 19 python bench/fuzz_atheris.py --target kdump=1000000@900   # at most 15 minutes
    python bench/fuzz_atheris.py --summary                # executions so far, per target
    python bench/fuzz_atheris.py --profile kdump          # where an execution's time goes

Each target runs in its own child (libFuzzer exits when done); the parent
reads libFuzzer's final stats, counts crash-* artifacts and measures each
child's peak RSS (wait4).  Each target's coverage corpus persists in
``~/.cache/tsubaki-forensics/fuzz-corpus/<target>`` (``--keep``) and every
run is appended to ``runs.jsonl`` there, so executions and coverage
accumulate across runs and sessions; ``--summary`` adds them up.
Crashers are kept under bench/fuzz-artifacts/ to become regression tests.

Speed: atheris traces every line and branch of the instrumented modules,
so only the parser under test is instrumented (``INSTRUMENT``); the input
is rewritten into one scratch file in /dev/shm, in place.  Comparison
tracing is left off where it leaks (``DATAFLOW``).
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("elf", "kdump", "tsd", "tsd-records", "symbolpack", "symbolpack-fixed", "json")
SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
#: Coverage corpora and the run ledger, kept across runs and sessions (beside the lab's cache).
KEEP = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tsubaki-forensics" / "fuzz-corpus"


# -- the child: one target under libFuzzer ---------------------------------------------

def _one_line(e: BaseException) -> None:
    text = str(e)
    if not text or "\n" in text:
        raise AssertionError(f"not a one-line error: {type(e).__name__}: {text!r}")


#: What each target instruments (atheris traces every line, branch and
#: comparison of these, ~8x the cost of plain Python): the parser under test
#: and the helpers it checks input with.  Everything else runs at full speed:
#: the completeness algebra and memory layer of ``.tsd`` (numpy set
#: operations on what the parser produced, where atheris's comparison tracing
#: also kept objects alive: docs/RELIABILITY.md), the error classes, the
#: writer used to frame inputs, and pyelftools' ``construct`` (it parses a
#: fixed-size ELF header: the program headers and notes are ours).
INSTRUMENT = {
    "elf": ("tsubaki_forensics.vmcore.elf", "tsubaki_forensics.elfnotes", "tsubaki_forensics.vmcore.notes",
            "tsubaki_forensics.limits", "elftools.elf.elffile"),
    "kdump": ("tsubaki_forensics.vmcore.kdump", "tsubaki_forensics.vmcore.flattened"),
    "tsd": ("tsubaki_forensics.tsd.reader", "tsubaki_forensics.tsd.records", "tsubaki_forensics.tsd.table",
            "tsubaki_forensics.tsd.verify", "tsubaki_forensics.limits"),
    "symbolpack": ("tsubaki_forensics.symbolpack.fileformat", "tsubaki_forensics.limits"),
    "json": ("tsubaki_forensics.limits",),
}
INSTRUMENT["tsd-records"] = INSTRUMENT["tsd"]
#: Targets whose comparisons atheris also traces (libFuzzer then learns the
#: constants compared against).  Not the kdump and ``.tsd`` readers: atheris
#: 3.1 keeps the results of comparisons on numpy arrays alive, and their code
#: compares arrays all the time: the kdump harness grew 2 MiB per 130
#: executions with comparison tracing and not at all without (libFuzzer
#: stopped it at 512 MiB after 43,350 executions, an input that alone
#: peaks at 44 MiB).  Their seeds carry every magic number already.
DATAFLOW = {"elf", "symbolpack", "symbolpack-fixed", "json"}
INSTRUMENT["symbolpack-fixed"] = INSTRUMENT["symbolpack"]


def _not_instrumented(target: str) -> list[str]:
    """Every module of the instrumented packages but the target's own (atheris's
    ``include`` takes whole top-level packages; ``exclude`` names modules)."""
    import importlib.util

    keep = set(INSTRUMENT[target])
    names = []
    for top in ("tsubaki_forensics", "elftools"):  # found on disk: importing them here would skip the hooks
        base = Path(importlib.util.find_spec(top).submodule_search_locations[0])
        for path in base.rglob("*.py"):
            parts = [top, *path.relative_to(base).with_suffix("").parts]
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [n for n in names if n not in keep]


def _harness(target: str, *, instrument: bool = True):
    import contextlib

    import atheris

    if not instrument:
        hooks = contextlib.nullcontext()
    elif target in DATAFLOW:
        hooks = atheris.instrument_imports(include=["tsubaki_forensics", "elftools"],
                                           exclude=_not_instrumented(target))
    else:  # branch coverage only: see DATAFLOW
        from atheris.import_hook import HookManager

        hooks = HookManager({"tsubaki_forensics", "elftools"}, set(_not_instrumented(target)),
                            enable_loader_override=True, trace_dataflow=False)
    with hooks:
        from tsubaki_forensics.errors import NotCollectedError, TsubakiError
        from tsubaki_forensics.limits import load_json
        from tsubaki_forensics.symbolpack.fileformat import HEADER, decode_pack
        from tsubaki_forensics.tsd import open_dump, open_file
        from tsubaki_forensics.tsd import records as R
        from tsubaki_forensics.tsd.verify import verify_dump
        from tsubaki_forensics.vmcore import ElfVmcore
        from tsubaki_forensics.vmcore.kdump import KdumpFile

    import uuid

    import xxhash

    scratch = SCRATCH / f"tsubaki-fuzz-{os.getpid()}.{target}"
    header = R.pack_file_header(R.FileHeader(uuid.UUID(int=7), "x86_64", 4096, R.Endian.LITTLE, "fuzz", 1))

    fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)  # one file, rewritten in place

    def to_file(data: bytes) -> Path:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return scratch

    def elf(data: bytes) -> None:
        try:
            with ElfVmcore(to_file(data)) as v:
                for start, length, _ in v.ranges()[:16]:
                    try:
                        v.read(start, min(length, 4096))
                    except NotCollectedError as e:
                        _one_line(e)
                _ = v.vmcoreinfo, v.notes
        except TsubakiError as e:
            _one_line(e)

    def kdump(data: bytes) -> None:
        """Plain or flattened (told apart by magic, as every command does)."""
        try:
            with KdumpFile(to_file(data)) as k:
                [str(p) for p in k.problems]
                _ = (k.vmcoreinfo, k.notes, k.memory_ranges(), k.present_ranges(), k.missing_ranges(),
                     k.excluded_ranges(), k.codecs())
                first = next((p for p in k.dumped_pfn_slices() if len(p)), k.dumped_pfns[:0])
                for pfn in first[:16].tolist():
                    try:
                        k.read_page(pfn)
                    except NotCollectedError as e:
                        _one_line(e)
                    except TsubakiError as e:  # one damaged page: the others still read
                        _one_line(e)
                for start, length in k.present_ranges()[:4]:
                    k.read(start, min(length, 3 * k.page_size))
        except TsubakiError as e:
            _one_line(e)

    def tsd(data: bytes) -> None:
        path = to_file(data)
        try:
            with open_dump(path) as dump:
                [str(p) for f in dump.files for p in f.problems]
                _ = dump.properties, dump.events, dump.completeness()
                for r in dump.memory.ranges()[:16]:
                    try:
                        dump.memory.read(r.start, min(r.length, 1 << 16))
                    except NotCollectedError as e:
                        _one_line(e)
        except TsubakiError as e:  # refused as a dump: what does the file reader make of it?
            _one_line(e)
            try:
                with open_file(path) as f:
                    [str(p) for p in f.problems]
            except TsubakiError as e:
                _one_line(e)
        try:
            [str(p) for p in verify_dump([path]).problems]
        except TsubakiError as e:
            _one_line(e)

    def tsd_records(data: bytes) -> None:
        """Records with sound checksums around fuzzed payloads (gets past the framing).

        The input is a chain of (type: u8, length: u16, payload) chunks.
        """
        out, pos, seq = [header], 0, 0
        while pos + 3 <= len(data) and seq < 256:
            rtype, n = data[pos], int.from_bytes(data[pos + 1:pos + 3], "little")
            payload = data[pos + 3:pos + 3 + n]
            pos += 3 + n
            out.extend(bytes(p) for p in R.pack_record(rtype % 12, 0, seq, uuid.UUID(int=7), payload))
            seq += 1
        tsd(b"".join(out))

    def symbolpack_fixed(data: bytes) -> None:
        """Header length and checksum recomputed: the zstd frame and JSON get fuzzed."""
        if len(data) < HEADER.size:
            return symbolpack(data)
        fields = list(HEADER.unpack_from(data))
        payload = data[HEADER.size:]
        fields[0], fields[4], fields[6] = b"\x89TSP\r\n\x1a\n", len(payload), xxhash.xxh64_intdigest(payload)
        symbolpack(HEADER.pack(*fields) + payload)

    def symbolpack(data: bytes) -> None:
        try:
            decode_pack(data)
        except TsubakiError as e:
            _one_line(e)

    def json_(data: bytes) -> None:
        try:
            load_json(data, "fuzz")
        except TsubakiError as e:
            _one_line(e)

    return {"elf": elf, "kdump": kdump, "tsd": tsd, "tsd-records": tsd_records, "symbolpack": symbolpack,
            "symbolpack-fixed": symbolpack_fixed, "json": json_}[target], scratch


def child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    test, scratch = _harness(target)

    def one(data: bytes) -> None:
        test(data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    try:
        atheris.Fuzz()
    finally:
        scratch.unlink(missing_ok=True)


# -- the seed corpus from a real crash -------------------------------------------------

def build_corpus(directory: Path) -> dict[str, Path]:
    """Seed directories per target, from the cached default lab crash and synthetic samples."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tsubaki_forensics.lab.crash import cached_crash
    from tsubaki_forensics.symbolpack import read_pack
    from tsubaki_forensics.symbolpack.fileformat import encode_pack
    from tsubaki_forensics.tsd import open_dump
    from tsubaki_forensics.vmcore import ElfVmcore, write_elf_vmcore
    from tsubaki_forensics.vmcore.importer import import_vmcore

    dirs = {t: directory / t for t in TARGETS}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    crash = None
    if not any(dirs["kdump"].iterdir()):
        crash = cached_crash(log=lambda m: print(m, file=sys.stderr))
        kdump_seeds(dirs["kdump"], crash.vmcore)
    if all(any(dirs[t].iterdir()) for t in ("elf", "tsd", "symbolpack", "json")):
        _derived(dirs)  # seeds already made from the crash: reuse them
        return dirs
    crash = crash or cached_crash(log=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        tmp = Path(tmp)
        raw = crash.vmcore.read_bytes() if crash.vmcore.stat().st_size < (1 << 20) else \
            open(crash.vmcore, "rb").read(64 << 10)
        (dirs["elf"] / "real-prefix-64k").write_bytes(raw)

        class Slice:  # the real dump's first pages of each range (a small, sound ELF)
            def __init__(self, v: ElfVmcore) -> None:
                self.v = v

            def ranges(self):
                from dataclasses import dataclass

                @dataclass
                class R:
                    start: int
                    length: int
                    kind: str = "data"

                    @property
                    def end(self):
                        return self.start + self.length
                return [R(s, min(n, 2 * 4096)) for s, n, _ in self.v.ranges()[:3]]

            def read(self, paddr, size):
                return self.v.read(paddr, size)

        with ElfVmcore(crash.vmcore) as v:
            write_elf_vmcore(tmp / "mini.elf", Slice(v), v.vmcoreinfo, v.notes, arch=v.arch)
        (dirs["elf"] / "real-mini").write_bytes((tmp / "mini.elf").read_bytes())
        import_vmcore(tmp / "mini.elf", tmp / "mini.tsd", threads=1)
        (dirs["tsd"] / "real-mini").write_bytes((tmp / "mini.tsd").read_bytes())
        import_vmcore(crash.vmcore, tmp / "full.tsd", threads=1)
        with open(tmp / "full.tsd", "rb") as f:
            head = f.read(256 << 10)
        for n in (4 << 10, 32 << 10, 256 << 10):
            (dirs["tsd"] / f"real-prefix-{n >> 10}k").write_bytes(head[:n])
        (tmp / "full.tsd").unlink()
        with open_dump(tmp / "mini.tsd") as dump:
            props = json.dumps(dump.properties).encode()
        (dirs["json"] / "real-properties").write_bytes(props)
        pack_path = tmp / "k.tsp"
        subprocess.run([sys.executable, "-m", "tsubaki_forensics.cli.app", "symbols", "pack",
                        str(crash.vmlinux), "-o", str(pack_path)], check=True, stdout=subprocess.DEVNULL)
        pack = read_pack(pack_path)
        small = {k: (v[:8] if isinstance(v, list) else dict(list(v.items())[:8]) if isinstance(v, dict) else v)
                 for k, v in pack.items()}
        (dirs["symbolpack"] / "real-small").write_bytes(encode_pack(small))
        (dirs["json"] / "real-pack-part").write_bytes(json.dumps(small).encode()[:4096])
    from test_fuzz_tsd import build_sample  # the tests' synthetic sample: every record type

    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        (dirs["tsd"] / "sample").write_bytes(build_sample(Path(tmp) / "s.tsd"))
    _derived(dirs)
    return dirs


def kdump_seeds(directory: Path, vmcore: Path, *, prefix: int = 256 << 10) -> None:
    """Seeds for the kdump target: makedumpfile's real output for ``vmcore``
    (``-c -d 31`` and flattened ``-F -l -d 31``, cut to their first ``prefix``
    bytes: headers, VMCOREINFO, notes, bitmaps and the first descriptors and
    pages) and small synthetic files holding every page codec."""
    from tsubaki_forensics.lab.makedumpfile import _tool
    from tsubaki_forensics.vmcore.export import copy_as_proc_vmcore

    sys.path.insert(0, str(ROOT / "tests"))
    from kdump_synth import build_kdump, flatten, sample_memory

    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        proc = Path(tmp) / "vmcore.proc"
        copy_as_proc_vmcore(vmcore, proc)
        for name, options in (("real-c-d31", ["-c"]), ("real-flat-l-d31", ["-F", "-l"])):
            args = [_tool(), *options, "-d", "31", str(proc)]
            if "-F" in options:
                run = subprocess.run(args, capture_output=True)
                out = run.stdout
            else:
                run = subprocess.run([*args, str(Path(tmp) / name)], capture_output=True)
                out = (Path(tmp) / name).read_bytes() if run.returncode == 0 else b""
            if run.returncode != 0:
                raise RuntimeError(f"makedumpfile {' '.join(options)} failed: {run.stderr[-300:]!r}")
            (directory / name).write_bytes(out[:prefix])
    valid, dumped, contents = sample_memory(64)  # 64 pages: a hole, excluded runs, zero pages
    for codec in ("zlib", "lzo", "snappy", "zstd", "none"):
        blob = build_kdump(valid, dumped, contents, codec=codec)
        (directory / f"synth-{codec}").write_bytes(blob)
    (directory / "synth-flat").write_bytes(flatten(build_kdump(valid, dumped, contents), piece=3000))
    (directory / "synth-incomplete").write_bytes(build_kdump(valid, dumped, contents, incomplete_after=4))


def _derived(dirs: dict[str, Path]) -> None:
    """Seeds of the checksum-fixing targets, from the plain ones."""
    for name in os.listdir(dirs["symbolpack"]):
        (dirs["symbolpack-fixed"] / name).write_bytes((dirs["symbolpack"] / name).read_bytes())
    for name in os.listdir(dirs["tsd"]):  # the real records, re-chunked as (type, length, payload)
        (dirs["tsd-records"] / name).write_bytes(_as_chunks((dirs["tsd"] / name).read_bytes()))


def _as_chunks(raw: bytes) -> bytes:
    from tsubaki_forensics.tsd import records as R

    out, pos = [], R.FILE_HEADER_SIZE
    while pos + R.RECORD_HEADER_SIZE <= len(raw) and len(out) < 256:
        hdr = R.unpack_record_header(raw[pos:pos + R.RECORD_HEADER_SIZE], pos)
        if hdr is None or hdr.payload_length > 0xFFFF:
            break
        payload = raw[pos + R.RECORD_HEADER_SIZE:pos + hdr.size]
        out.append(bytes([hdr.type]) + len(payload).to_bytes(2, "little") + payload)
        pos += hdr.size
    return b"".join(out)


# -- the parent: run every target, gather figures ---------------------------------------

_STAT = re.compile(r"stat::(\w+):\s*(\d+)")


def run_target(target: str, seeds: Path, runs: int, artifacts: Path, rss_mb: int, max_len: int,
               seconds: int = 0, keep: Path | None = None) -> dict:
    """One libFuzzer run of ``target``.  With ``keep``, the inputs that found new
    coverage stay in ``keep/<target>`` and are replayed first by the next run,
    so coverage (and the execution count in the ledger) accumulates."""
    artifacts.mkdir(parents=True, exist_ok=True)
    if keep is not None:
        work = keep / target
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-", dir=SCRATCH))
    kept_before = len(list(work.iterdir()))
    args = [str(work), str(seeds), f"-runs={runs}", f"-rss_limit_mb={rss_mb}", f"-max_len={max_len}",
            f"-artifact_prefix={artifacts}/{target}-", "-print_final_stats=1", "-timeout=30",
            "-close_fd_mask=1", *([f"-max_total_time={seconds}"] if seconds else [])]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", target, "--", *args]
    start = time.monotonic()
    before = {p.name for p in artifacts.iterdir()}
    with tempfile.TemporaryFile() as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        for leftover in SCRATCH.glob(f"tsubaki-fuzz-{p.pid}.*"):  # libFuzzer exits past the child's finally
            leftover.unlink(missing_ok=True)
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    seconds = time.monotonic() - start
    stats = {k: int(v) for k, v in _STAT.findall(text)}
    new = sorted(p.name for p in artifacts.iterdir() if p.name not in before)
    tail = "\n".join(text.splitlines()[-40:]) if p.returncode else ""
    kept = len(list(work.iterdir()))
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)  # libFuzzer's working corpus (in RAM under /dev/shm)
    return {"target": target, "runs": stats.get("number_of_executed_units", 0), "seconds": round(seconds, 1),
            "exit": p.returncode, "crashes": new, "peak_rss_mib": usage.ru_maxrss // 1024,
            "libfuzzer_peak_rss_mb": stats.get("peak_rss_mb"), "coverage_corpus": kept,
            "corpus_before": kept_before, "tail": tail}


def _commit() -> str:
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return run.stdout.strip() or "?"


def record(ledger: Path, row: dict) -> None:
    """Append one run to the ledger (one JSON object a line): the figures the
    cumulative report sums, kept beside the corpus across sessions."""
    entry = {k: v for k, v in row.items() if k != "tail"}
    entry.update(date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), commit=_commit(),
                 python=platform.python_version())
    with open(ledger, "a") as f:
        f.write(json.dumps(entry) + "\n")


def summary(ledger: Path) -> str:
    """Cumulative figures per target from the ledger, as a Markdown table."""
    totals: dict[str, dict] = {}
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        r = json.loads(line)
        t = totals.setdefault(r["target"], {"runs": 0, "executions": [], "seconds": 0.0, "crashes": 0,
                                           "peak": 0, "corpus": 0})
        t["runs"] += 1
        t["executions"].append(r["runs"])
        t["seconds"] += r["seconds"]
        # libFuzzer exits 72 when interrupted (SIGINT: a run stopped by hand), 0 when done
        t["crashes"] += len(r["crashes"]) + (1 if r["exit"] not in (0, 72, None) and not r["crashes"] else 0)
        t["peak"] = max(t["peak"], r["peak_rss_mib"])
        t["corpus"] = r["coverage_corpus"]
    lines = ["| target | runs | executions (each run) | executions in all | seconds | crashes | "
             "peak RSS (MiB) | corpus kept |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, t in totals.items():
        each = ", ".join(f"{n:,}" for n in t["executions"])
        lines.append(f"| {name} | {t['runs']} | {each} | **{sum(t['executions']):,}** | {t['seconds']:.0f} | "
                     f"{t['crashes']} | {t['peak']} | {t['corpus']} |")
    return "\n".join(lines)


def write_report(rows: list[dict], command: str, path: Path) -> None:
    total = sum(r["runs"] for r in rows)
    lines = [
        f"`{command}` — {time.strftime('%Y-%m-%d', time.gmtime())}, {platform.python_version()}, "
        f"{os.cpu_count()} CPUs shared.",
        "",
        "| target | executions | seconds | exec/s | crashes | peak RSS (MiB) | corpus kept |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rate = r["runs"] / r["seconds"] if r["seconds"] else 0
        lines.append(f"| {r['target']} | {r['runs']:,} | {r['seconds']:.0f} | {rate:.0f} | {len(r['crashes'])} | "
                     f"{r['peak_rss_mib']} | {r['coverage_corpus']} |")
    lines += ["", f"**{total:,} executions in all; {sum(len(r['crashes']) for r in rows)} crashes.**", ""]
    for r in rows:
        if r["crashes"]:
            lines.append(f"- {r['target']}: {', '.join(r['crashes'])}")
        if r["tail"]:
            lines += [f"<details><summary>{r['target']} log tail</summary>", "", "```", r["tail"], "```",
                      "</details>", ""]
    path.write_text("\n".join(lines) + "\n")


def profile(target: str, seeds: Path, count: int) -> None:
    """The harness without instrumentation over mutated seeds, under cProfile:
    where an execution's time goes, apart from atheris's tracing."""
    import cProfile
    import pstats
    import random

    test, scratch = _harness(target, instrument=False)
    inputs = [p.read_bytes() for p in sorted(seeds.iterdir())]
    rng = random.Random(1)
    cases = []
    for _ in range(count):
        b = bytearray(rng.choice(inputs))
        for _ in range(4):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append(bytes(b[:rng.choice([len(b), 1 << 12, 1 << 16])]))
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    for data in cases:
        test(data)
    prof.disable()
    print(f"{target}: {(time.perf_counter() - t) / count * 1e6:.0f} us per execution uninstrumented "
          f"(under cProfile)")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    scratch.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", action="append", metavar="NAME[=RUNS[@SECONDS]]",
                    help=f"one of {', '.join(TARGETS)}, optionally with its own execution count "
                         f"and time limit")
    ap.add_argument("--runs", type=int, default=250_000, help="executions per target")
    ap.add_argument("--corpus", type=Path, default=SCRATCH / "tsubaki-fuzz-corpus", help="the seeds")
    ap.add_argument("--keep", type=Path, default=KEEP,
                    help="where each target's coverage corpus and the run ledger persist (default "
                         "%(default)s); 'none' for a throw-away corpus")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "bench" / "fuzz-artifacts")
    ap.add_argument("--seconds", type=int, default=0, help="stop each target after this long (libFuzzer "
                                                              "-max_total_time), whichever comes first")
    ap.add_argument("--rss-limit-mb", type=int, default=512)
    ap.add_argument("--max-len", type=int, default=1 << 18)
    ap.add_argument("--report", type=Path, help="also write this run's table here (Markdown)")
    ap.add_argument("--summary", action="store_true", help="print the ledger's cumulative figures and exit")
    ap.add_argument("--profile", metavar="TARGET", help="profile TARGET's harness uninstrumented and exit")
    a = ap.parse_args(argv)
    keep = None if str(a.keep) == "none" else a.keep
    ledger = (keep or SCRATCH) / "runs.jsonl"
    if a.summary:
        print(summary(ledger))
        return 0
    dirs = build_corpus(a.corpus)
    if a.profile:
        profile(a.profile, dirs[a.profile], a.runs if a.runs != 250_000 else 300)
        return 0
    rows = []
    for spec in a.target or TARGETS:
        target, _, runs = spec.partition("=")
        runs, _, seconds = runs.partition("@")
        if target not in TARGETS:
            ap.error(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
        row = run_target(target, dirs[target], int(runs or a.runs), a.artifacts, a.rss_limit_mb, a.max_len,
                         int(seconds or a.seconds), keep)
        print(json.dumps({k: v for k, v in row.items() if k != "tail"}), flush=True)
        if keep is not None:
            record(ledger, row)
        rows.append(row)
    if a.report:
        write_report(rows, "python bench/fuzz_atheris.py " + " ".join(argv), a.report)
    if keep is not None:
        print(summary(ledger))
    return 1 if any(r["crashes"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
