"""On a real crashed Debian kernel, through the CLI: import -> verify -> export,
and drgn lists the same tasks and panic backtrace from the export as from the original."""

from __future__ import annotations

import json
import subprocess

import pytest
from _cli import CLI

pytestmark = pytest.mark.realkernel


def cli(*args):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def drgn_view(core, vmlinux):
    import drgn
    from drgn.helpers.linux.pid import for_each_task

    prog = drgn.Program()
    prog.set_core_dump(str(core))
    prog.load_debug_info([str(vmlinux)])
    tasks = sorted((t.pid.value_(), t.comm.string_().decode()) for t in for_each_task(prog))
    frames = []
    for frame in prog.crashed_thread().stack_trace():
        if frame.pc < 0xFFFF800000000000:  # stop at the first user-space address
            break
        frames.append(frame.pc)
    return tasks, frames


def test_import_verify_export_then_drgn_sees_the_same_kernel(real_crash, tmp_path):
    tsd, out = tmp_path / "crash.tsd", tmp_path / "export.elf"
    imported = json.loads(cli("import", real_crash.vmcore, "-o", tsd, "--format", "json"))
    assert imported["data_bytes"] > 0 and imported["file_bytes"] < imported["raw_bytes"]
    verified = json.loads(cli("verify", tsd, "--format", "json"))
    assert verified["ok"], verified["problems"]
    info = json.loads(cli("inspect", tsd, "--format", "json"))
    assert info["kernel_release"] == real_crash.ground_truth["kernel_release"]
    assert info["notes"]["prstatus"] >= 1
    assert info["memory"]["completeness_percent"] == 100.0
    cli("export", tsd, "-o", out)

    original = drgn_view(real_crash.vmcore, real_crash.vmlinux)
    exported = drgn_view(out, real_crash.vmlinux)
    assert exported == original
    truth = sorted((t["pid"], t["comm"]) for t in real_crash.ground_truth["tasks"])
    assert exported[0] == truth
    assert exported[1], "no kernel frames in the crashed thread's backtrace"
