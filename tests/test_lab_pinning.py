"""Which kernel the crash lab boots: series vs pinned release, the fallback, the manifest.

No QEMU, no download: apt is faked (``_apt_version`` answers for the releases
a fake archive holds, ``resolve_release`` names the fake newest) and kernels
are fake cache entries.  The release names are made up on purpose (ABI 90+):
these tests are about the choice, not about what Debian serves today;
tests/test_lab_real.py proves pinning on the real archive.
"""

from __future__ import annotations

import json
import os

import pytest

from tsubaki_forensics.errors import LabError
from tsubaki_forensics.lab import CrashParams, kernel
from tsubaki_forensics.lab.cache import atomic_entry
from tsubaki_forensics.lab.pinning import PIN_ENV, KernelRequest, env_pins, parse_kernel_request, series_of

NEWEST_61 = "6.1.0-99-cloud-amd64"
OLDER_61 = "6.1.0-98-cloud-amd64"
GONE_61 = "6.1.0-90-cloud-amd64"
NEWEST_612 = "6.12.199+deb12-cloud-amd64"


# --- parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("6.1", KernelRequest("6.1")),
    ("6.12", KernelRequest("6.12")),
    ("6.1.0-98", KernelRequest("6.1", OLDER_61)),
    (OLDER_61, KernelRequest("6.1", OLDER_61)),
    (" 6.1.0-98 ", KernelRequest("6.1", OLDER_61)),
    ("6.12.199+deb12", KernelRequest("6.12", NEWEST_612)),
    ("6.12.199+deb12-cloud-amd64", KernelRequest("6.12", NEWEST_612)),
])
def test_kernel_request_is_a_series_or_a_pinned_release(spec, expected, monkeypatch):
    monkeypatch.delenv(PIN_ENV, raising=False)
    assert parse_kernel_request(spec) == expected


def test_generic_flavour_pins_its_own_release():
    assert parse_kernel_request("6.1.0-98", "amd64", environ={}).pinned == "6.1.0-98-amd64"
    with pytest.raises(LabError, match="is of the amd64 flavour; the lab boots cloud-amd64"):
        parse_kernel_request("6.1.0-98-amd64", environ={})
    with pytest.raises(LabError, match="is of the cloud-amd64 flavour; the lab boots amd64"):
        parse_kernel_request(OLDER_61, "amd64", environ={})


@pytest.mark.parametrize("spec", ["latest", "6", "six.one", "6.1.x", "6.1.0 -98", ""])
def test_malformed_kernel_is_a_clear_error(spec):
    with pytest.raises(LabError, match="neither a series .* nor a Debian release"):
        parse_kernel_request(spec, environ={})
    with pytest.raises(LabError, match="neither a series"):
        CrashParams(kernel=spec).normalized()


def test_series_of_a_release():
    assert [series_of(s) for s in ("6.1", "6.1.0-98", "6.12.199+deb12-cloud-amd64", "10.20")] == [
        "6.1", "6.1", "6.12", "10.20"]


def test_environment_pins_bare_series_only():
    env = {PIN_ENV: " 6.1.0-98, 6.12.199+deb12 "}
    assert env_pins(env) == {"6.1": OLDER_61, "6.12": NEWEST_612}
    assert parse_kernel_request("6.1", environ=env) == KernelRequest("6.1", OLDER_61, pinned_by=PIN_ENV)
    assert parse_kernel_request("6.12", environ=env).pinned == NEWEST_612
    # an explicit release beats the environment
    assert parse_kernel_request("6.1.0-99", environ=env) == KernelRequest("6.1", NEWEST_61)
    assert parse_kernel_request("6.1", environ={PIN_ENV: ""}) == KernelRequest("6.1")


@pytest.mark.parametrize("value, message", [
    ("6.1", "is a series; pin a release"),
    ("6.1.0-98,6.1.0-97", "pins series 6.1 twice"),
    ("bogus", "neither a series"),
])
def test_bad_environment_pin_is_a_clear_error(value, message):
    with pytest.raises(LabError, match=message):
        parse_kernel_request("6.1", environ={PIN_ENV: value})


# --- resolution against a fake archive and cache -------------------------------------

@pytest.fixture
def archive(monkeypatch, tmp_path):
    """A fake apt (``releases`` it offers, the newest per series) and an empty cache; counts fetches."""
    monkeypatch.setenv("TSUBAKI_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(PIN_ENV, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # never apt-get update
    state = {"releases": {NEWEST_61, OLDER_61, NEWEST_612}, "fetched": [], "apt_calls": 0}

    def apt_version(package):
        state["apt_calls"] += 1
        release = package.removeprefix("linux-image-").rsplit("-", 1)[0]
        if release not in state["releases"]:
            raise LabError(f"apt has no package {package}")
        return "1.0-1"

    def resolve(series, flavour="cloud-amd64", *, update=False):
        state["apt_calls"] += 1
        return {"6.1": NEWEST_61, "6.12": NEWEST_612}[series]

    def fetch(series, flavour, release, entry, log):
        state["fetched"].append(release)
        fake_kernel_entry(entry, series, release)

    monkeypatch.setattr(kernel, "_apt_version", apt_version)
    monkeypatch.setattr(kernel, "resolve_release", resolve)
    monkeypatch.setattr(kernel, "_fetch", fetch)
    return state


def fake_kernel_entry(entry, series, release):
    """A complete cache entry as :func:`kernel._fetch` writes it (empty files)."""
    modules = sorted(f"{m.replace('-', '_')}.ko" for m in kernel.GUEST_MODULES + kernel.OPTIONAL_MODULES)
    with atomic_entry(entry) as tmp:
        for name in ("bzImage", "vmlinux"):
            (tmp / name).write_bytes(b"")
        meta = {"series": series, "release": release, "version": "1.0-1", "modules": modules,
                "build_id": "00", "download_bytes": 0, "timings": {}}
        (tmp / "kernel.json").write_text(json.dumps(meta))


def test_series_uses_the_newest(archive, capsys):
    art = kernel.ensure_kernel("6.1")
    assert (art.release, art.requested, art.series) == (NEWEST_61, "6.1", "6.1")
    assert archive["fetched"] == [NEWEST_61] and capsys.readouterr().err == ""


def test_pin_in_the_archive_is_fetched(archive, capsys):
    art = kernel.ensure_kernel("6.1.0-98")
    assert (art.release, art.requested) == (OLDER_61, OLDER_61)
    assert archive["fetched"] == [OLDER_61] and "warning" not in capsys.readouterr().err


def test_pin_gone_from_the_archive_falls_back_to_the_newest_with_a_warning(archive, capsys):
    art = kernel.ensure_kernel("6.1.0-90")
    assert (art.release, art.requested) == (NEWEST_61, GONE_61)
    err = capsys.readouterr().err
    assert err == (f"warning: kernel {GONE_61} is no longer in the archive nor in the cache; "
                   f"using the newest 6.1: {NEWEST_61}\n")
    logged = []
    kernel.ensure_kernel("6.1.0-90", log=logged.append)  # with a log, the warning goes there
    assert logged == [f"warning: kernel {GONE_61} is no longer in the archive nor in the cache; "
                      f"using the newest 6.1: {NEWEST_61}"]


def test_cached_pin_needs_no_apt(archive, capsys):
    fake_kernel_entry(kernel.kernels_dir() / GONE_61, "6.1", GONE_61)
    archive["apt_calls"] = 0
    art = kernel.ensure_kernel("6.1.0-90")
    assert (art.release, archive["apt_calls"], archive["fetched"]) == (GONE_61, 0, [])
    assert capsys.readouterr().err == ""


def test_environment_pin_applies_to_series_requests(archive, monkeypatch, capsys):
    monkeypatch.setenv(PIN_ENV, "6.1.0-98")
    assert kernel.ensure_kernel("6.1").release == OLDER_61
    assert kernel.ensure_kernel("6.12").release == NEWEST_612  # not pinned
    monkeypatch.setenv(PIN_ENV, "6.1.0-90")
    assert kernel.ensure_kernel("6.1").release == NEWEST_61
    assert f"{GONE_61} (pinned by {PIN_ENV}) is no longer in the archive" in capsys.readouterr().err


def test_stale_lists_fall_back_after_the_refresh(archive, monkeypatch, capsys):
    """apt still lists the pin but the mirror dropped it: as root, refresh the lists and fall back."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    updates = []

    def apt_update():
        updates.append(1)
        archive["releases"].discard(OLDER_61)

    def fetch(series, flavour, release, entry, log):
        if release == OLDER_61:
            raise kernel.DownloadError(f"downloading linux-image-{release}-unsigned failed: 404 Not Found")
        fake_kernel_entry(entry, series, release)

    monkeypatch.setattr(kernel, "apt_update", apt_update)
    monkeypatch.setattr(kernel, "_fetch", fetch)
    art = kernel.ensure_kernel("6.1.0-98")
    assert (art.release, art.requested, updates) == (NEWEST_61, OLDER_61, [1])
    assert f"warning: kernel {OLDER_61} is no longer in the archive" in capsys.readouterr().err


def test_offline_pin_uses_the_newest_cached_release_with_a_warning(archive, monkeypatch, capsys):
    fake_kernel_entry(kernel.kernels_dir() / OLDER_61, "6.1", OLDER_61)

    def offline(*args, **kwargs):
        raise LabError("apt does not know linux-image-cloud-amd64")

    monkeypatch.setattr(kernel, "resolve_release", offline)
    monkeypatch.setattr(kernel, "_apt_version", offline)
    assert kernel.ensure_kernel("6.1.0-90").release == OLDER_61
    assert f"warning: apt cannot resolve {GONE_61}; using cached {OLDER_61}" in capsys.readouterr().err
    monkeypatch.setattr(kernel, "cached_releases", lambda series=None, flavour=None: [])
    with pytest.raises(LabError, match="apt does not know"):
        kernel.ensure_kernel("6.1.0-90")


def test_cli_lab_bad_kernel_is_one_line(capsys, tmp_path):
    from tsubaki_forensics.cli.app import main

    assert main(["lab", "crash", "--kernel", "latest", "-o", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: kernel 'latest' is neither a series") and err.count("\n") == 1
    assert not (tmp_path / "c").exists()
