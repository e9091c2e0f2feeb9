"""A real single-node Slurm cluster in a temporary folder, for the tests and the benchmark.

Debian's `slurm-wlm` and `munge` (installed by `.ci/slurm-deps`): a generated `slurm.conf` for this
host, a fresh munge key and socket, then `munged`, `slurmctld` and `slurmd`, all private to the
folder (their own ports, spool, state and pid files), so it never touches a system Slurm. Clients
find it through `SLURM_CONF`, which `env()` returns.

The node is declared with more CPUs than the box has (`SlurmdParameters=config_overrides`), so a
handful of tiny test jobs run at once on a 2-core machine, and with two fake GPUs as a `gpu` gres
(no device files: Slurm counts and allocates them, `sinfo` shows them, nothing binds a card).
Accounting is off (no slurmdbd): tracking goes through squeue and `scontrol show job`, as on a
cluster without accounting.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

CPUS = 8
GPUS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_tools() -> list[str]:
    return [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
            if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    """`start()` brings the cluster up and waits for the node to be idle; `stop()` ends the daemons."""

    def __init__(self, root: Path, partitions: tuple[str, ...] = ("debug",)) -> None:
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.partitions = partitions
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ configuration

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def write_config(self) -> None:
        r = self.root
        for sub in ("munge", "state", "spool", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        ctld_port, d_port = free_port(), free_port()
        parts = "\n".join(
            f"PartitionName={p} Nodes={self.host} Default={'YES' if i == 0 else 'NO'} MaxTime=INFINITE State=UP"
            for i, p in enumerate(self.partitions))
        self.conf.write_text(f"""\
ClusterName=labdeck-test
SlurmctldHost={self.host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/slurmd-%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={r}/log/jobcomp.txt
ReturnToService=2
MinJobAge=300
KillWait=2
OverTimeLimit=0
InactiveLimit=0
MessageTimeout=5
SlurmctldTimeout=30
SlurmdTimeout=30
MpiDefault=none
LaunchParameters=use_interactive_step
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=8000 Gres=gpu:{GPUS} State=UNKNOWN
{parts}
""")
        # Fake GPU devices: Slurm wants a character device per card (it hands them out, nothing
        # binds them); copies of /dev/null's device number serve (root may mknod).
        (r / "dev").mkdir(exist_ok=True)
        for i in range(GPUS):
            dev = r / "dev" / f"nvidia{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (r / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File={r}/dev/nvidia[0-{GPUS - 1}]\n")
        (r / "spool" / f"slurmd-{self.host}").mkdir(exist_ok=True)

    # ------------------------------------------------------------------ daemons

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - the daemon owns it
        try:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                                start_new_session=True)
        finally:
            out.close()

    def start_munge(self) -> None:
        self._spawn("munged", [_bin("munged"), "-F", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={self.root / 'munge' / 'munge.key'}",
                               f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={self.root / 'munge' / 'munged.seed'}"])
        self._wait(lambda: self.munge_socket.exists(), 15, "munged's socket")

    def start_ctld(self) -> None:
        self._spawn("slurmctld", [_bin("slurmctld"), "-D", "-f", str(self.conf)])

    def start_slurmd(self) -> None:
        self._spawn("slurmd", [_bin("slurmd"), "-D", "-f", str(self.conf), "-N", self.host])

    def start(self, timeout: float = 60.0) -> None:
        self.write_config()
        self.start_munge()
        self.start_ctld()
        self.start_slurmd()
        self.wait_idle(timeout)

    def stop_daemon(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def restart_ctld(self) -> None:
        self.stop_daemon("slurmctld")
        self.start_ctld()

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=self.env(), capture_output=True,
                       timeout=10, check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            self.stop_daemon(name)

    # ------------------------------------------------------------------ queries

    def run(self, *argv: str, check: bool = True) -> str:
        p = subprocess.run(list(argv), env=self.env(), capture_output=True, text=True, timeout=30, check=False)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout

    def node_state(self) -> str:
        """The node's state (`sinfo` prints it once per partition)."""
        states = set(self.run("sinfo", "-h", "-N", "-o", "%T", check=False).split())
        return states.pop() if len(states) == 1 else ",".join(sorted(states))

    def wait_idle(self, timeout: float = 60.0) -> None:
        def idle() -> bool:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    log = (self.root / "log" / f"{name}.out").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited with {p.returncode}: {log}")
            return self.node_state() in ("idle", "mixed", "allocated")

        self._wait(idle, timeout, "the Slurm node to be idle")

    def _wait(self, pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout}s waiting for {what}; logs in {self.root / 'log'}")
            time.sleep(0.2)
