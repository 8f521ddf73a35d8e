"""System programs a test needs, installed from Debian's packages with apt-get when one is missing.

CI runs the tests as root on a Debian image that lacks them (slurm-wlm and munge for the SLURM test, chromium for the
report's browser test), so a test installs what it needs instead of being skipped there.
"""

from __future__ import annotations

import os
import shutil
import subprocess

# Daemons (slurmctld, munged) live in sbin, which a non-login PATH may lack.
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def which(name: str) -> str | None:
    """The program's path on PATH or in the sbin folders, or None."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def ensure_installed(packages: tuple[str, ...], binaries: tuple[str, ...], timeout: float = 300) -> str | None:
    """Install ``packages`` with apt-get unless every program in ``binaries`` is found; an error text, or None.

    The text says why they cannot be installed here (not root, no apt-get) or which apt-get step failed and how.
    """
    missing = [b for b in binaries if not which(b)]
    if not missing:
        return None
    if not shutil.which("apt-get"):
        return f"{', '.join(missing)} missing and no apt-get to install {' '.join(packages)}"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return f"{', '.join(missing)} missing and installing {' '.join(packages)} with apt-get needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    )
    for cmd in steps:
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{' '.join(cmd)} failed: {e}"
        if r.returncode != 0:
            return f"{' '.join(cmd)} failed (rc {r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}"
    missing = [b for b in binaries if not which(b)]
    return f"still missing after apt-get install: {', '.join(missing)}" if missing else None
