"""Live mode: the Tsubaki protocol on a real Linux guest under QEMU.

The guest's RAM is base RAM plus hot-pluggable DIMMs, each in a shared host
file (:mod:`.layout`, :mod:`.guest`); the host monitor (:mod:`.monitor`)
waits for pvpanic's GUEST_PANICKED and runs a policy of
:mod:`monitor_model.policies` through the protocol loop the emulation runs
(:mod:`monitor_model.protocol`): ``tsubaki`` saves the base RAM, reboots the
guest in it while its DIMMs stay offline, dumps the DIMMs and hands each back
(the guest agent onlines it) once it is durable.  See docs/LIVE.md.
"""

from .layout import Layout, Piece, plan_layout
from .monitor import LIVE_POLICIES, LiveParams, LiveResult, run_protocol
from .session import GuestConfig, collect_panic, normal_operation, open_guest
from .vm import LiveError, LiveGuest

__all__ = [
    "GuestConfig",
    "Layout",
    "LIVE_POLICIES",
    "LiveError",
    "LiveGuest",
    "LiveParams",
    "LiveResult",
    "Piece",
    "collect_panic",
    "normal_operation",
    "open_guest",
    "plan_layout",
    "run_protocol",
]
