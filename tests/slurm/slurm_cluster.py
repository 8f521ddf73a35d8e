"""A throw-away single-node SLURM cluster for integration tests.

Everything lives in one private directory: its own ``slurm.conf``/``gres.conf`` (client commands find them via
``SLURM_CONF``), spool, state, logs, a private munge socket and free TCP ports, so it neither reads nor clobbers a
system SLURM or munge. The daemons run in the foreground as children of the test (``munged -F``,
``slurmctld -D``, ``slurmd -D``); teardown stops exactly those PIDs and nothing else.

The node imitates a GPU node: four fake GPUs (``gres.conf``: ``Name=gpu File=/dev/null`` and three more character
devices, as in docs/slurm-test-cluster.md) and, via ``SlurmdParameters=config_overrides``,
16 CPUs and 64 GB declared regardless of the real hardware, so a cluster profile's full-scale requests (``--gpus=1
--cpus-per-gpu=N --mem=...``) are schedulable verbatim on a small CI machine.

``MinJobAge=300`` keeps finished jobs in slurmctld's memory for 5 minutes: squeue (the status command used
without slurmdbd) and ``scontrol show job`` can still read them after they end.

Debian's ``slurm-wlm`` 22.05 and ``munge`` 0.5 are assumed (``ensure_installed`` installs them with apt-get).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: its helpers, also when run as a script
import debian_packages  # noqa: E402

PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")

FAKE_GPUS = 4
FAKE_GPU_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")
NODE_CPUS = 16
NODE_MEM_MB = 64000
PARTITION = "debug"
MIN_JOB_AGE_S = 300


def unavailable_reason() -> str | None:
    """Why a SLURM cluster cannot be brought up here (None when it can, perhaps after ``ensure_installed``)."""
    if not hasattr(os, "geteuid") or os.uname().sysname != "Linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (runs slurmctld/slurmd/munged and may apt-get install slurm-wlm munge)"
    return None


def ensure_installed(timeout: float = 300) -> str | None:
    """Install slurm-wlm and munge with apt-get if a binary is missing; returns an error text or None."""
    return debian_packages.ensure_installed(PACKAGES, BINARIES, timeout)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class SlurmCluster:
    """``with SlurmCluster() as c: subprocess.run(cmd, env=c.env)`` — a running single-node cluster."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="slurm-ci-")))
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    bringup_s: float = 0.0

    # --- paths -------------------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def ctld_log(self) -> Path:
        return self.root / "log" / "slurmctld.log"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (sbatch, squeue, ...) and everything that calls them."""
        path = os.pathsep.join([str(self.bin), os.environ.get("PATH", "")])
        return dict(os.environ, SLURM_CONF=str(self.conf), PATH=path)

    # --- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        t0 = time.monotonic()
        self._write_config()
        self._spawn_munged()
        self._spawn("slurmctld", [debian_packages.which("slurmctld"), "-D", "-f", str(self.conf)])
        self._spawn("slurmd", [debian_packages.which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait_idle(timeout)
        self.bringup_s = time.monotonic() - t0

    def stop(self, timeout: float = 15) -> None:
        """Cancel this cluster's jobs, then stop the daemons this object started, by PID, newest first.

        Job processes (slurmstepd and what it runs) are not our children; they are found by the private
        ``SLURM_CONF`` path in their environment, so nothing outside this cluster is ever signalled.
        """
        ctld = self.procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            ids = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
            if ids:
                self.run("scancel", *ids, check=False)
            deadline = time.monotonic() + timeout
            while self.job_processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        for pid in self.job_processes(jobs_only=False):  # e.g. a step that outlived slurmd would wait for it forever
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for f in getattr(self, "_logs", {}).values():
            f.close()

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def stopped(self) -> bool:
        """Our daemons have exited and no process that carries this cluster's SLURM_CONF is left."""
        return all(p.poll() is not None for p in self.procs.values()) and not self.job_processes(jobs_only=False)

    def job_processes(self, jobs_only: bool = True) -> list[int]:
        """Live processes (other than our daemons) whose environment names this cluster's slurm.conf.

        jobs_only: only slurmstepd and what jobs run (SLURM_JOB_ID set), not slurmctld's own slurmscriptd helper.
        """
        marker = f"SLURM_CONF={self.conf}".encode()
        ours = {p.pid for p in self.procs.values()} | {os.getpid()}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in ours:
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()[0]
            if marker not in env or state == "Z":
                continue
            if not jobs_only or comm == "slurmstepd" or any(e.startswith(b"SLURM_JOB_ID=") for e in env):
                found.append(int(entry.name))
        return found

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # --- helpers -----------------------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, check=check, timeout=30)

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still remembers (MinJobAge keeps finished ones), as ``scontrol show job`` fields."""
        out = self.run("scontrol", "show", "job", "--oneliner").stdout
        records = []
        for line in out.splitlines():
            if not line.strip() or line.startswith("No jobs"):
                continue
            rec: dict[str, str] = {}
            for tok in line.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    rec.setdefault(k, v)  # first occurrence wins (e.g. the job's Command vs. later keys)
            records.append(rec)
        return records

    def logs(self) -> str:
        parts = []
        for p in sorted((self.root / "log").glob("*.log")):
            parts.append(f"==> {p.name} <==\n{p.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def _write_config(self) -> None:
        for d in ("etc", "spool/ctld", "spool/d", "log", "run", "munge"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # munged runs as the munge user and must reach its socket directory
        self.root.chmod(0o755)
        munge = pwd.getpwnam("munge")
        os.chown(self.root / "munge", munge.pw_uid, munge.pw_gid)
        (self.root / "munge").chmod(0o755)  # munged wants the socket directory traversable by all
        # Inside a job, snakemake-executor-plugin-slurm-jobstep 0.6.1 runs the rule through a nested `srun` with
        # every SLURM_* variable except the job's identity removed, SLURM_CONF included. A real cluster keeps its
        # config where srun finds it without the variable (/etc/slurm, or slurmd's configless cache); this private
        # cluster does not, so an `srun` shim on the jobs' PATH (sbatch --export=ALL) puts SLURM_CONF back.
        self.bin.mkdir(exist_ok=True)
        shim = self.bin / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{debian_packages.which("srun")}" "$@"\n')
        shim.chmod(0o755)
        ctld_port, d_port = _free_ports(2)
        r = self.root
        node_line = (
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEM_MB}"
            f" Gres=gpu:fake:{FAKE_GPUS} State=UNKNOWN"
        )
        self.conf.write_text(
            f"""# generated by tests/slurm/slurm_cluster.py
ClusterName=ci
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/spool/ctld
SlurmdSpoolDir={r}/spool/d
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={self.ctld_log}
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge={MIN_JOB_AGE_S}
SlurmdParameters=config_overrides
GresTypes=gpu
{node_line}
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        # one character device per fake GPU: slurmd refuses a duplicated File= or a regular file (and Count=
        # without File= makes the node INVAL). Nothing ever opens them.
        files = FAKE_GPU_FILES[:FAKE_GPUS]
        (self.conf.parent / "gres.conf").write_text(
            "".join(f"NodeName={self.node} Name=gpu Type=fake File={f}\n" for f in files)
        )

    def _spawn(self, name: str, argv: list[str], **kw) -> None:
        if not hasattr(self, "_logs"):
            self._logs = {}
        out = self._logs[name] = open(self.root / "log" / f"{name}.stdout.log", "w")
        self.procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, **kw
        )

    def _spawn_munged(self) -> None:
        m = self.root / "munge"
        munge = pwd.getpwnam("munge")
        argv = [
            debian_packages.which("munged"), "-F", "--force",
            f"--socket={self.munge_socket}", f"--pid-file={m}/munged.pid",
            f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed",
        ]  # fmt: skip
        self._spawn("munged", argv, user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
        for _ in range(100):
            if self.munge_socket.exists():
                return
            if self.procs["munged"].poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"munged did not come up\n{self.logs()}")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}\n{self.logs()}")
            r = self.run("sinfo", "-h", "-N", "-o", "%t %G", check=False)
            last = (r.stdout + r.stderr).strip()
            if r.returncode == 0 and last.startswith("idle"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"node not idle after {timeout:.0f}s (sinfo: {last!r})\n{self.logs()}")


if __name__ == "__main__":  # manual bring-up: python tests/slurm/slurm_cluster.py
    reason = unavailable_reason() or ensure_installed()
    if reason:
        sys.exit(f"cannot start SLURM: {reason}")
    with SlurmCluster() as c:
        print(f"up in {c.bringup_s:.2f}s; export SLURM_CONF={c.conf}")
        print(c.run("sinfo", "-o", "%P %N %t %c %m %G").stdout)
        out = c.root / "log" / "job-%j.out"
        print(c.run("sbatch", "--parsable", "--gpus=1", "-o", str(out), "--wrap", "echo $CUDA_VISIBLE_DEVICES").stdout)
        time.sleep(3)
        for job in c.jobs():
            print({k: job[k] for k in ("JobId", "JobState", "TresPerJob", "StdOut")})
        if "--hold" in sys.argv:
            input("press enter to stop the cluster ")
    print("stopped:", c.stopped())
    c.cleanup()
