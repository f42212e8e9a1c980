"""What the guest is doing when it crashes.

``idle``: a few named daemons and a written file; a fresh guest like that is
mostly zero pages.  ``busy``: most of the guest's available RAM holds
realistic data of mixed compressibility, built with busybox only: random
media blobs in tmpfs (incompressible), application logs and a copy of
``/proc/kallsyms`` (text), copies of executables (binary), and resident
process memory (an awk cache of records, a dd buffer of random bytes).
Every workload starts the same named processes so task lists are
comparable between runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LabError

__all__ = ["Workload", "WORKLOADS", "get_workload", "DAEMONS"]

# Scripts installed as /usr/bin/<name>; the kernel names a script's process
# after the script, so these comms appear in every task list.
DAEMONS: dict[str, str] = {
    "tsk-sensord": (
        "i=0\nwhile :; do i=$((i+1)); read l < /proc/loadavg; "
        "echo \"$i $l\" >> /data/sensor.log; sleep 1; done"
    ),
    "tsk-logger": (
        "while :; do echo \"$(date) heartbeat uptime=$(cut -d' ' -f1 /proc/uptime)\" "
        ">> /data/app.log; sleep 2; done"
    ),
    "tsk-netd": "while :; do sleep 3600; done",
}


# Shares of MemAvailable (percent) for each kind of busy data, ~75% in all;
# the rest leaves room for the kernel and the trigger so that non-OOM
# scenarios never meet the OOM killer.
_BUSY = r"""
avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
mb() { echo $(( avail_kb * $1 / 100 / 1024 )); }
mkdir -p /data/media /data/logs /data/opt /data/db
# resident process memory first, so it fills while the files are written:
# a record cache (mixed text) and a key vault (random bytes)
tsk-cache $(mb 15) &
tsk-vault $(mb 7) &
# incompressible: media blobs (tmpfs pages)
dd if=/dev/urandom of=/data/media/capture-0001.bin bs=1M count=$(mb 15) 2>/dev/null
klog "busy: media written"
# text: kernel symbol table copy and application logs (page cache of tmpfs);
# generated once, then appended in large pieces (interpreting a loop per line is slow under TCG)
cat /proc/kallsyms > /data/logs/kallsyms.txt
sep=" sensor=temp-probe unit=C status=ok source=tsk-sensord
"
seq -s "$sep" 1 40000 > /tmp/lines.txt
target=$(( $(mb 20) * 1024 * 1024 ))
while [ "$(stat -c %s /data/logs/app-history.log 2>/dev/null || echo 0)" -lt "$target" ]; do
  cat /tmp/lines.txt /data/logs/kallsyms.txt >> /data/logs/app-history.log
done
rm /tmp/lines.txt
klog "busy: logs written"
# binary: executables and modules copied as an installed application would be
cat /bin/busybox /lib/modules/*.ko > /tmp/unit.bin
for k in 1 2 3 4 5 6 7 8; do cat /tmp/unit.bin; done > /tmp/pack.bin
pack_mb=$(( $(stat -c %s /tmp/pack.bin) / 1048576 )); want=$(mb 18); n=0
while [ $(( n * pack_mb )) -lt "$want" ]; do n=$((n+1)); cp /tmp/pack.bin /data/opt/app-$n.bin; done
rm /tmp/unit.bin /tmp/pack.bin
klog "busy: binaries written"
# wait (bounded) until the process memory is resident
vault_kb=$(( $(mb 7) * 1024 * 95 / 100 )); t=0
while [ $t -lt 600 ]; do
  rss=$(awk '/^VmRSS:/ {print $2}' /proc/$(cat /data/db/vault.pid 2>/dev/null || echo self)/status 2>/dev/null)
  [ -f /data/db/cache.ready ] && [ "${rss:-0}" -ge "$vault_kb" ] && break
  sleep 0.2; t=$((t+1))
done
klog "busy: process memory resident"
"""

# Helper programs of the busy workload, installed as /usr/bin/<name>.
_BUSY_SCRIPTS = {
    # About 1 MiB of varied records, joined by halving (linear copying), then
    # one block per MiB that starts at a different offset of it.
    "tsk-cache": """exec awk -v mb="$1" '
function join(lo, hi,    mid) {
  if (hi - lo == 1) return rec[lo]
  mid = int((lo + hi) / 2)
  return join(lo, mid) join(mid, hi)
}
BEGIN {
  alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
  for (n = 0; n < 26000; n++)
    rec[n] = sprintf("id=%08d ts=%d key=%08x val=%s\\n", n, 1700000000 + n * 7, (n * 2654435761) % 4294967296, substr(alpha, n % 30 + 1, 6))
  base = join(0, n)
  for (j = 0; j < mb; j++)
    blk[j] = sprintf("block %d gen %d\\n", j, j * 31) substr(base, (j * 4099) % 65536 + 1)
  system("touch /data/db/cache.ready")
  while (1) system("sleep 3600")
}'""",
    # dd holds its whole bs-sized buffer of random bytes while blocked on a
    # FIFO that nobody drains.
    "tsk-vault": (
        "mkfifo /tmp/vault.fifo\n"
        "dd if=/dev/urandom of=/tmp/vault.fifo bs=$1M count=1 2>/dev/null &\n"
        "echo $! > /data/db/vault.pid\n"
        "exec sleep 2147483647 < /tmp/vault.fifo"
    ),
}


@dataclass(frozen=True)
class Workload:
    """Shell run by /init after the daemons start, before the trigger."""

    name: str
    summary: str
    script: str
    helpers: dict[str, str] = field(default_factory=dict)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("idle", "named daemons, a few small files; RAM mostly untouched", "sleep 1\n"),
        Workload("busy", "~75% of available RAM in files and process memory, mixed compressibility",
                 _BUSY, _BUSY_SCRIPTS),
    )
}


def get_workload(name: str) -> Workload:
    """The workload called ``name``.

    :raises LabError: unknown name.
    """
    try:
        return WORKLOADS[name]
    except KeyError:
        raise LabError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}") from None
