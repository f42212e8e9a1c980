"""``tsubaki-forensics symbols``: symbol packs for kernels whose dumps cannot describe themselves.

``symbols pack VMLINUX -o kernel.tsp`` extracts what the analyses need from
a DWARF vmlinux into a small versioned file (docs/SELFCONTAINED.md, "Symbol
packs"); ``symbols info kernel.tsp`` shows what a pack holds;
``symbols attach kernel.tsp DUMP.tsd`` writes a companion file of the dump
whose SYMBOLPACK record carries the pack (a multi-file dump, docs/FORMAT.md
§4.3, §8); ``collect --symbols`` puts it in the dump itself.  Results go
to stdout (``--format json`` for programs), errors are one line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import TsubakiError
from ..safewrite import atomic_output, check_output
from . import output as cli_output
from .output import format_option, print_json, safe_text

__all__ = ["register"]

symbols_app = typer.Typer(
    name="symbols",
    help="Symbol packs: what the analyses need from a DWARF vmlinux, in a small file.",
    no_args_is_help=True,
)


class SymbolsUsageError(TsubakiError):
    """Bad arguments to a ``symbols`` command."""


def _check_format(fmt: str) -> None:
    if fmt not in ("text", "json"):
        raise SymbolsUsageError(f"--format must be text or json, not {fmt!r}")


def _summary(pack: dict, path: Path, size: int) -> dict:
    return {
        "path": str(path),
        "bytes": size,
        "build_id": pack["kernel"].get("build_id"),
        "vmlinux": pack["kernel"].get("vmlinux"),
        "types": len(pack["types"]),
        "type_names": len(pack["names"]),
        "objects": len(pack["objects"]),
        "symbols": len(pack["symbols"]["names"]),
        "not_in_vmlinux": pack.get("not_in_vmlinux", {}),
    }


def _show(data: dict, fmt: str) -> None:
    if fmt == "json":
        print_json(data)
        return
    for key, value in data.items():
        cli_output.stdout.print(f"{key:<15} {safe_text(value)}")


@symbols_app.command("pack")
def pack_command(
    vmlinux: Annotated[Path, typer.Argument(help="The kernel's vmlinux with DWARF debug info.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Pack file to write (.tsp).")] = Path("kernel.tsp"),
    types: Annotated[list[str] | None, typer.Option("--type", help="Also pack this type (e.g. 'struct foo'); repeatable.")] = None,
    objects: Annotated[list[str] | None, typer.Option("--object", help="Also pack this global, function or constant; repeatable.")] = None,
    fmt: Annotated[str, format_option()] = "text",
    force: Annotated[bool, typer.Option("--force", help="Replace the pack file if it exists.")] = False,
) -> None:
    """Extract the types, globals and symbols the analyses use from VMLINUX into a pack."""
    from ..symbolpack import write_pack
    from ..symbolpack.extract import build_pack

    _check_format(fmt)
    if not vmlinux.is_file():
        raise SymbolsUsageError(f"{vmlinux} does not exist")
    check_output(output, force, vmlinux)
    clock = time.perf_counter()
    pack = build_pack(vmlinux, extra_types=types or (), extra_objects=objects or ())
    try:
        with atomic_output(output, force=force, inputs=(vmlinux,)) as partial:
            size = write_pack(pack, partial)
    except OSError as e:
        raise SymbolsUsageError(f"cannot write {output}: {e.strerror or e}") from e
    data = _summary(pack, output, size)
    data["seconds"] = round(time.perf_counter() - clock, 2)
    data["vmlinux_bytes"] = vmlinux.stat().st_size
    _show(data, fmt)


@symbols_app.command("info")
def info_command(
    pack_path: Annotated[Path, typer.Argument(metavar="PACK.tsp", help="A symbol pack.")],
    fmt: Annotated[str, format_option()] = "text",
) -> None:
    """Show what a symbol pack holds."""
    from ..symbolpack import read_pack

    _check_format(fmt)
    pack = read_pack(pack_path)
    _show(_summary(pack, pack_path, pack_path.stat().st_size), fmt)


@symbols_app.command("attach")
def attach_command(
    pack_path: Annotated[Path, typer.Argument(metavar="PACK.tsp", help="A symbol pack of the dump's kernel.")],
    dump_path: Annotated[Path, typer.Argument(metavar="DUMP.tsd", help="The dump (any one of its files).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Companion file (default: DUMP.symbols.tsd).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the companion file if it exists.")] = False,
) -> None:
    """Write a companion file of the dump that carries the pack (analyze DUMP.tsd DUMP.symbols.tsd)."""
    from ..symbolpack.embed import write_companion

    if not pack_path.is_file() or not dump_path.is_file():
        raise SymbolsUsageError(f"{pack_path if not pack_path.is_file() else dump_path} does not exist")
    out = output or dump_path.with_name(dump_path.name.removesuffix(".tsd") + ".symbols.tsd")
    with atomic_output(out, force=force, inputs=(pack_path, dump_path)) as partial:  # never its own input
        size = write_companion(pack_path.read_bytes(), dump_path, partial)
    cli_output.stdout.print(f"{safe_text(out)}: {size} bytes, the pack for {safe_text(dump_path)}")


def register(app: typer.Typer) -> None:
    """Add the ``symbols`` command group to ``app``."""
    app.add_typer(symbols_app, name="symbols")
