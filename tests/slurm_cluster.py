"""A real one-node SLURM for the tests: munged, slurmctld and slurmd started from a temporary folder.

Installs nothing. It finds the daemons (Debian's `slurm-wlm` and `munge`, installed by
scripts/install_system_deps.sh, which `make test` runs), writes a slurm.conf for this machine (its real CPU
count and memory, as `slurmd -C` reports them) with its own ports, state, spool, log and pid files, starts
the three daemons in the foreground as children of the test process, waits until `sinfo` shows the node
idle, and at the end stops exactly those three processes. Client commands (sbatch, squeue, scancel, and
dask-jobqueue's calls to them) find this cluster through SLURM_CONF, which `env` carries.

Where the daemons are missing or cannot start (not root), the tests that use it skip with the reason; on CI
(CI=true) that is a failure instead, so the cluster tests cannot silently stop running there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

DAEMONS = {"munged": "munge", "mungekey": "munge", "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm",
           "sinfo": "slurm-wlm", "sbatch": "slurm-wlm"}
PARTITION = "debug"
NODE = "vtnode"


def _find(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)),
                                      None)


def missing_reason() -> str | None:
    """Why a test SLURM cannot start here, or None."""
    absent = sorted({pkg for exe, pkg in DAEMONS.items() if _find(exe) is None})
    if absent:
        return (f"no SLURM to test against: install Debian packages {' '.join(absent)} "
                "(scripts/install_system_deps.sh)")
    if os.geteuid() != 0:
        return "the test SLURM starts slurmd and munged as root; run the tests as root"
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the cluster tests: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) of this machine, as slurmd itself measures them."""
    out = subprocess.run([_find("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    cpus = int(re.search(r"CPUs=(\d+)", out).group(1))
    mem = int(re.search(r"RealMemory=(\d+)", out).group(1))
    return cpus, mem


class SlurmCluster:
    """The daemons of one test cluster; `env` is the environment for client commands."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: dict[str, subprocess.Popen] = {}
        self.cpus, self.memory_mb = _node_hardware()
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket.2"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ---- configuration ------------------------------------------------------------------------------
    def write_config(self) -> None:
        for d in ("state", "spool", "log", "munge", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        host = socket.gethostname()
        r = self.root
        self.conf.write_text("\n".join([
            "ClusterName=vtpipetest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/run/slurmctld.pid",
            f"SlurmdPidFile={r}/run/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc",  # no cgroups: works in containers
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=512",
            "ReturnToService=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=600",
            "SchedulerParameters=sched_interval=2",
            f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    # ---- daemons ------------------------------------------------------------------------------------
    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        log.close()

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        key = self.root / "munge" / "munge.key"
        subprocess.run([_find("mungekey"), "--create", f"--keyfile={key}", "--force"], check=True,
                       capture_output=True)
        os.chmod(key, 0o600)
        self._start("munged", [_find("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={self.root}/run/munged.pid",
                               f"--log-file={self.root}/log/munged.log", f"--seed-file={self.root}/munge/seed"])
        self._wait(lambda: self.munge_socket.exists(), 15, "munged")
        self._start("slurmctld", [_find("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._sinfo() is not None, timeout, "slurmctld")
        self._start("slurmd", [_find("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait(lambda: (self._sinfo() or "").strip() == "idle", timeout, "slurmd (node idle)")

    def _sinfo(self) -> str | None:
        p = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env)
        return p.stdout if p.returncode == 0 else None

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited {self.procs[dead[0]].returncode}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{self.logs()}")

    def logs(self, tail: int = 30) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM then SIGKILL exactly the daemons this object started (slurmd first: it ends its job steps)."""
        if "slurmd" in self.procs and self.procs["slurmd"].poll() is None:
            subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True)
            end = time.monotonic() + 20  # let slurmd's job steps end before slurmd does
            while time.monotonic() < end and any(r["state"] in ("RUNNING", "COMPLETING") for r in self._rows()):
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    # ---- client helpers -----------------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True, cwd: str | None = None, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env={**self.env, **(env or {})}, capture_output=True, text=True,
                              check=check, cwd=cwd, timeout=timeout)

    def jobs(self) -> list[dict]:
        """Jobs slurmctld knows (running and recently finished): id (with _<array task>), state, reason."""
        return self._rows(check=True)

    def _rows(self, check: bool = False) -> list[dict]:
        p = self.run("squeue", "-h", "-t", "all", "-r", "-o", "%i|%T|%r|%j", check=check)
        rows = []
        for line in p.stdout.splitlines():
            jid, state, reason, name = line.split("|")
            rows.append({"id": jid, "state": state, "reason": reason, "name": name})
        return rows


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node SLURM (see the module's docstring)."""
    reason = missing_reason()
    if reason:
        skip_or_fail(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        cluster.stop()
        pytest.fail(f"the SLURM daemons are installed but did not start: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()
