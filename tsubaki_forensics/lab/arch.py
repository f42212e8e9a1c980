"""The guest architectures of the crash lab: what differs between x86_64 and arm64.

One record per architecture, so the rest of the lab (kernel download,
initramfs, QEMU, ground truth) asks it instead of branching on names.

How each guest tells the host it panicked differs, because Debian's arm64
kernels are built without ``CONFIG_PVPANIC`` (checked in the 6.1 and 6.12
``cloud-arm64`` and ``arm64`` configs):

- x86_64: the ``pvpanic`` device; QEMU pauses the guest (``-action
  panic=pause``) inside the panic notifier and emits ``GUEST_PANICKED``.
- arm64: ``panic=-1`` makes ``panic()`` call ``emergency_restart()`` at once;
  the PSCI ``SYSTEM_RESET`` reaches QEMU, which with ``-no-reboot`` and
  ``-action shutdown=pause`` keeps the guest paused and its memory intact and
  emits ``SHUTDOWN`` with reason ``guest-reset``.  The panicking CPU's
  registers are then in ``psci_sys_reset`` called from ``panic``, so drgn's
  backtrace still runs through ``panic`` and its callers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LabError

__all__ = ["GuestArch", "ARCHES", "get_arch", "arch_of_flavour", "HOST_ARCH"]


@dataclass(frozen=True)
class GuestArch:
    """Everything about one guest architecture that the lab needs."""

    name: str  # what users type: --arch x86_64 / arm64
    deb_arch: str  # Debian's name: amd64 / arm64
    default_flavour: str
    flavours: tuple[str, ...]
    qemu: str
    qemu_package: str
    machine: str
    cpu: str | None
    console: str
    panic_device: str | None  # a QEMU device that reports the panic, or None (reset-pause)
    guest_modules: tuple[str, ...]  # modules /init loads before the workload
    busybox_package: str  # Debian package holding the guest's static busybox
    # QMP commands that exist only on some architectures (scenario triggers).
    qmp_commands: frozenset[str] = frozenset()

    def package(self, name: str) -> str:
        """An apt package name of this architecture, qualified when it is not the host's."""
        return name if self.deb_arch == HOST_ARCH.deb_arch else f"{name}:{self.deb_arch}"


X86_64 = GuestArch(
    name="x86_64", deb_arch="amd64", default_flavour="cloud-amd64", flavours=("cloud-amd64", "amd64"),
    qemu="qemu-system-x86_64", qemu_package="qemu-system-x86", machine="pc", cpu=None, console="ttyS0",
    panic_device="pvpanic",
    # Without pvpanic there is no GUEST_PANICKED; without qemu_fw_cfg no VMCOREINFO in the dump.
    guest_modules=("pvpanic", "pvpanic-mmio", "qemu_fw_cfg"),
    busybox_package="busybox-static", qmp_commands=frozenset({"inject-nmi"}),
)
ARM64 = GuestArch(
    name="arm64", deb_arch="arm64", default_flavour="cloud-arm64", flavours=("cloud-arm64", "arm64"),
    qemu="qemu-system-aarch64", qemu_package="qemu-system-arm", machine="virt", cpu="max", console="ttyAMA0",
    panic_device=None, guest_modules=("qemu_fw_cfg",),
    busybox_package="busybox-static",
)
ARCHES: dict[str, GuestArch] = {a.name: a for a in (X86_64, ARM64)}
_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "aarch64": "arm64"}
HOST_ARCH = X86_64  # the lab runs on x86_64 hosts (Debian 12 amd64)


def get_arch(name: str) -> GuestArch:
    """The architecture called ``name`` (``x86_64``, ``arm64`` or an alias such as ``aarch64``).

    :raises LabError: unknown architecture.
    """
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    try:
        return ARCHES[key]
    except KeyError:
        raise LabError(f"unknown guest architecture {name!r}; choose one of {', '.join(ARCHES)}") from None


def arch_of_flavour(flavour: str) -> GuestArch:
    """The architecture a Debian kernel flavour is built for (``cloud-arm64`` -> arm64).

    :raises LabError: a flavour the lab does not boot.
    """
    for arch in ARCHES.values():
        if flavour in arch.flavours:
            return arch
    known = ", ".join(f for a in ARCHES.values() for f in a.flavours)
    raise LabError(f"unknown kernel flavour {flavour!r}; choose one of {known}")
