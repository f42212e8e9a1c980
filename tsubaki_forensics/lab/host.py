"""Host tools the lab needs, installed on demand, and the accelerator probe.

CI runs on a fresh Debian 12 machine, so the lab installs what is missing
with apt-get when it runs as root, and otherwise says exactly what to
install.  KVM is used only when a real guest instruction runs under it:
``/dev/kvm`` can exist in nested setups where every boot hangs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import LabError

__all__ = [
    "HOST_TOOLS",
    "ensure_host_tools",
    "find_static_busybox",
    "probe_accelerator",
    "run_tool",
]

# command -> Debian package that provides it
HOST_TOOLS: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "busybox": "busybox-static",
    "objcopy": "binutils",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
}
_STATIC_BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def run_tool(argv: list[str], *, what: str, timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a host command; any failure becomes a LabError naming ``what`` and stderr's tail."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except FileNotFoundError as e:
        raise LabError(f"{what}: {argv[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{what}: {argv[0]} did not finish within {timeout:.0f} s") from e
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
        raise LabError(f"{what} failed ({' '.join(argv[:3])} exit {proc.returncode}): {tail}")
    return proc


def _is_static_elf(path: str) -> bool:
    """True when ``path`` is an ELF without a program interpreter (runs in a bare initramfs)."""
    from elftools.elf.elffile import ELFFile
    from elftools.common.exceptions import ELFError

    try:
        with open(path, "rb") as f:
            return not any(seg["p_type"] == "PT_INTERP" for seg in ELFFile(f).iter_segments())
    except (OSError, ELFError):
        return False


def find_static_busybox() -> Path | None:
    """The statically linked busybox (``busybox-static``), or None."""
    for candidate in _STATIC_BUSYBOX_CANDIDATES:
        if os.path.exists(candidate) and _is_static_elf(candidate):
            return Path(candidate)
    return None


def _missing_packages(tools: list[str]) -> list[str]:
    missing = []
    for tool in tools:
        present = find_static_busybox() is not None if tool == "busybox" else shutil.which(tool)
        if not present:
            missing.append(HOST_TOOLS[tool])
    return sorted(set(missing))


def ensure_host_tools(tools: list[str] | None = None) -> None:
    """Make sure every tool is present, installing its package when root.

    :raises LabError: a tool is missing and cannot be installed here.
    """
    tools = list(HOST_TOOLS) if tools is None else tools
    packages = _missing_packages(tools)
    if not packages:
        return
    hint = f"apt-get install --no-install-recommends {' '.join(packages)}"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise LabError(f"the crash lab needs {', '.join(packages)}; install them as root: {hint}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        run_tool(["apt-get", "update", "-q"], what="apt-get update (to install lab tools)", env=env)
        run_tool(install, what=f"installing {' '.join(packages)}", env=env)
    still = _missing_packages(tools)
    if still:
        raise LabError(f"installed {' '.join(packages)} but {', '.join(still)} still missing")


# A 512-byte boot sector: mov al,0x2a; out 0xf4,al (isa-debug-exit); hlt; jmp $.
# QEMU then exits with status (0x2a << 1) | 1 = 85 only if guest code really ran.
_PROBE_SECTOR = bytes.fromhex("b02ae6f4f4ebfd").ljust(510, b"\0") + b"\x55\xaa"
_PROBE_EXIT = (0x2A << 1) | 1


def _boots_real_mode(qemu: str, timeout: float) -> bool:
    with tempfile.TemporaryDirectory(prefix="tsubaki-kvm-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(_PROBE_SECTOR)
        argv = [
            qemu, "-accel", "kvm", "-machine", "pc", "-m", "16M", "-nodefaults",
            "-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=1",
            "-drive", f"file={disk},format=raw,if=ide",
        ]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return proc.returncode == _PROBE_EXIT


def _boots_linux(qemu: str, bzimage: Path, timeout: float, accel: str = "kvm") -> bool:
    """Boot ``bzimage`` without a root fs under ``accel``: it must reach its own panic.

    Nested setups without hardware support run real-mode code but hang once
    Linux switches modes, so only a kernel boot proves KVM usable.
    """
    with tempfile.TemporaryDirectory(prefix="tsubaki-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [
            qemu, "-accel", accel, "-machine", "pc", "-m", "256M", "-nodefaults", "-display", "none",
            "-no-reboot", "-kernel", str(bzimage), "-append", "console=ttyS0 panic=-1",
            "-serial", f"file:{console}",
        ]
        try:
            subprocess.run(argv, capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return "Kernel panic" in console.read_text(errors="replace")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@functools.cache
def probe_accelerator(bzimage: Path | None = None, qemu: str = "qemu-system-x86_64", timeout: float = 20.0) -> str:
    """``"kvm"`` when guests really run under KVM here, else ``"tcg"``.

    A boot sector first (cheap), then, given ``bzimage``, a Linux boot; the
    verdict is remembered in the cache for this host boot.
    ``TSUBAKI_LAB_ACCEL`` (``kvm`` or ``tcg``) overrides the probe.
    """
    from .cache import cache_root

    forced = os.environ.get("TSUBAKI_LAB_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = f"{_boot_id()} {shutil.which(qemu)}"  # any Linux boot proves the accelerator
    memo = cache_root() / "accel-probe.json"
    try:
        saved = json.loads(memo.read_text())
        if saved.get("key") == key:
            return saved["accel"]
    except (OSError, ValueError):
        pass
    ok = _boots_real_mode(qemu, timeout) and (bzimage is None or _boots_linux(qemu, bzimage, timeout))
    accel = "kvm" if ok else "tcg"
    if bzimage is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": key, "accel": accel}))
            os.replace(tmp, memo)
        except OSError:
            pass
    return accel
