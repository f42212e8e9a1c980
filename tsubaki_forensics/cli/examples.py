"""An example in every command's ``--help``, kept in one table.

One table instead of a paragraph in each command's docstring: a test
(tests/test_cli_help.py) parses every example with the real command line, so
an option renamed in a command module breaks the test instead of leaving a
stale example, and a command added without an example is noticed.
"""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["EXAMPLES", "add_examples"]

# command path ("lab crash") -> example command lines, the first the most common.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "collect": (
        "tsubaki-forensics collect vmcore.elf -o dump.tsd --policy tsubaki --storage sd-uhs1",
        "tsubaki-forensics collect lab:sysrq,mem=2G,workload=busy --compare -f json",
    ),
    "monitor": ("tsubaki-forensics monitor --mem 1G -o live.tsd",),
    "import": (
        "tsubaki-forensics import vmcore.elf -o dump.tsd",
        "tsubaki-forensics import vmcore.elf -o dump.tsd --dedup --level 1 -f json",
    ),
    "export": ("tsubaki-forensics export dump.tsd -o vmcore.elf",),
    "inspect": ("tsubaki-forensics inspect dump.tsd", "tsubaki-forensics inspect dump.tsd -f json"),
    "verify": ("tsubaki-forensics verify dump.tsd", "tsubaki-forensics verify part1.tsd part2.tsd -f json"),
    "analyze": (
        "tsubaki-forensics analyze dump.tsd",
        "tsubaki-forensics analyze dump.tsd -q -f json --only panic",
        "tsubaki-forensics analyze dump.tsd --vmlinux vmlinux-6.1.0-57-amd64 --tail 50",
        "tsubaki-forensics analyze dump.tsd --only blocked,memory,dmesg -T",
    ),
    "shell": (
        "tsubaki-forensics shell dump.tsd",
        "tsubaki-forensics shell dump.tsd -e 'print(prog[\"init_uts_ns\"].name.release)'",
        "tsubaki-forensics shell dump.tsd myscript.py -- --verbose",
    ),
    "plugins": ("tsubaki-forensics plugins", "tsubaki-forensics plugins -f json --disable myplugin"),
    "crash": (
        "tsubaki-forensics crash dump.tsd",
        "tsubaki-forensics crash dump.tsd -q -c sys -c 'bt -a' -c 'kmem -i'",
        "tsubaki-forensics crash dump.tsd -i commands.txt",
    ),
    "triage": (
        "tsubaki-forensics triage dumps/",
        "tsubaki-forensics triage dumps/ -f html -o report.html",
    ),
    "lab crash": (
        "tsubaki-forensics lab crash --scenario oom --mem 1G -o crash-dir",
        "tsubaki-forensics lab crash --kernel 6.12 --workload busy -o crash-dir -f json",
    ),
    "lab kernel": ("tsubaki-forensics lab kernel 6.12",),
    "lab list": ("tsubaki-forensics lab list", "tsubaki-forensics lab list -f json"),
    "symbols pack": ("tsubaki-forensics symbols pack vmlinux -o kernel.tsp",),
    "symbols info": ("tsubaki-forensics symbols info kernel.tsp -f json",),
    "symbols attach": ("tsubaki-forensics symbols attach dump.tsd kernel.tsp",),
}


def _help_with_examples(help_text: str, examples: tuple[str, ...]) -> str:
    # \b: click prints the paragraph as written (one example a line, never re-wrapped)
    lines = "\n".join(f"    {e}" for e in examples)
    return f"{help_text.rstrip()}\n\nExamples:\n\n\b\n{lines}\n"


def add_examples(app: typer.Typer, prefix: str = "") -> None:
    """Append each command's examples (from :data:`EXAMPLES`) to its help, in ``app`` and its sub-apps."""
    import inspect

    for info in app.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else "")
        examples = EXAMPLES.get(f"{prefix}{name}")
        if examples and not (isinstance(info.help, str) and "\nExamples:\n" in info.help):  # apps are module-level: once
            base: Any = info.help if isinstance(info.help, str) else inspect.getdoc(info.callback) or ""
            info.help = _help_with_examples(base, examples)
    for group in app.registered_groups:
        if group.typer_instance is not None and group.name:
            add_examples(group.typer_instance, f"{prefix}{group.name} ")
