"""CLI hygiene: --version/-V, -h everywhere, an example in every help that really parses,
-f/--format checked alike by every command, one spelling of -o/--output."""

from __future__ import annotations

import shlex

import pytest
import typer.main

from tsubaki_forensics import __version__
from tsubaki_forensics.cli.app import build_app, main
from tsubaki_forensics.cli.examples import EXAMPLES


def _commands():
    root = typer.main.get_command(build_app([]))

    def walk(command, path):
        if hasattr(command, "list_commands"):  # a group; the root loads its commands on demand
            for name in command.list_commands(None):
                yield from walk(command.get_command(None, name), [*path, name])
        else:
            yield " ".join(path), command

    return root, dict(walk(root, []))


ROOT, COMMANDS = _commands()


def _resolve(args: list[str]):
    """The command an argument list reaches, parsed by the real command line (nothing runs)."""
    command, context = ROOT, None
    name = "tsubaki-forensics"
    while True:
        context = command.make_context(name, list(args), parent=context, resilient_parsing=True)
        if not hasattr(command, "commands"):
            return command, context
        rest = [*getattr(context, "_protected_args", []), *context.args]
        name, command, args = command.resolve_command(context, rest)


def test_version(capsys):
    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        assert capsys.readouterr().out == f"tsubaki-forensics {__version__}\n"


def test_every_command_has_examples_and_takes_h(capsys):
    assert set(COMMANDS) == set(EXAMPLES), "a command without examples, or examples of no command"
    for path, _ in COMMANDS.items():
        assert main([*path.split(), "-h"]) == 0, path
        out = capsys.readouterr().out
        assert "Examples:" in out and EXAMPLES[path][0].split(" -")[0] in out, path


@pytest.mark.parametrize("path", sorted(EXAMPLES))
def test_examples_parse(path):
    for example in EXAMPLES[path]:
        argv = shlex.split(example)
        assert argv[0] == "tsubaki-forensics"
        command, context = _resolve(argv[1:])
        assert command is COMMANDS[path], example
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        given = [a for a in argv[1:] if a.startswith("-") and a != "--" and "--" not in argv[:argv.index(a)]]
        assert set(given) <= known, (example, set(given) - known)


@pytest.mark.parametrize("path", sorted(p for p, c in COMMANDS.items() if any("--format" in q.opts for q in c.params)))
def test_format_short_flag_and_bad_value_are_the_same_everywhere(path, capsys):
    (option,) = [p for p in COMMANDS[path].params if "--format" in p.opts]
    assert "-f" in option.opts, path
    assert main([*path.split(), "-f", "xml"]) == 1, path
    err = capsys.readouterr().err
    assert err.startswith("error: unknown format 'xml' for --format") and len(err.splitlines()) == 1, err


def test_data_commands_all_have_format():
    no_data = {"shell", "crash", "lab kernel", "symbols attach"}  # a REPL, crash's own text, downloads, a file
    assert {p for p, c in COMMANDS.items() if not any("--format" in q.opts for q in c.params)} <= no_data


def test_one_spelling_of_output(capsys):
    for path, command in COMMANDS.items():
        for param in command.params:
            if "--out" in param.opts:
                assert param.hidden, f"{path}: --out is only a hidden alias of --output"
            if "--output" in param.opts:
                assert "-o" in param.opts, path
    assert "--out " not in (main(["lab", "crash", "-h"]), capsys.readouterr().out)[1]
    command, context = _resolve(["lab", "crash", "--out", "somewhere"])
    assert str(context.params["out"]) == "somewhere"
    assert main(["lab", "crash"]) == 2 and "'-o' / '--output'" in capsys.readouterr().err  # required, a usage error


@pytest.mark.parametrize("command", ["analyze", "crash", "shell"])
def test_a_broken_elf_vmcore_is_one_line(command, tmp_path, capsys):
    """ELF vmcores open directly (docs/FORMATS.md); a broken one is one line naming it."""
    elf = tmp_path / "vmcore"
    elf.write_bytes(b"\x7fELF" + bytes(60))
    assert main([command, str(elf)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {elf}: malformed ELF")
