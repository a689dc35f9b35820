"""A private one-node Slurm cluster in a folder: munged, slurmctld and slurmd with their key,
state, spool, logs and configuration in that folder, started as child processes and stopped by
their pids. For the tests of the sweep on Slurm, and for trying the sweep before a real cluster:

    python tests/slurm_cluster.py /tmp/cluster     # prints the SLURM_CONF to export; Ctrl-C stops it

Needs root and Debian's packages: apt-get install slurmctld slurmd slurm-client munge.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
START_SECONDS = 60  # for the node to come up idle


def why_not_here() -> Optional[str]:
    """Why no cluster can start on this machine, or None."""
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurmctld slurmd slurm-client munge"
    if os.geteuid() != 0:
        return "slurmd runs each job as its user, which needs root"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def configuration(folder: Path, host: str, cpus: int, memory_mb: int) -> str:
    """slurm.conf for one node on this host: no cgroups and no accounting, so it runs in a container."""
    return f"""ClusterName=sweeptest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={folder}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=1
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=30
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start_munge(folder: Path) -> subprocess.Popen:
    """munged with a fresh key, its socket in ``folder``/munge."""
    munge = folder / "munge"
    munge.mkdir(mode=0o711)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    daemon = subprocess.Popen(["munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
                               f"--key-file={key}", f"--log-file={munge}/munged.log", f"--pid-file={munge}/munged.pid",
                               f"--seed-file={munge}/munged.seed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (munge / "munge.socket").exists(), "munged's socket", daemon)
    return daemon


def wait_for(ready, what: str, *daemons: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        ended = [daemon.args[0] for daemon in daemons if daemon.poll() is not None]
        if ended or time.monotonic() > deadline:
            raise RuntimeError(f"no {what}: " + (f"{', '.join(ended)} ended" if ended else f"not within {START_SECONDS} s"))
        time.sleep(0.2)


@contextlib.contextmanager
def slurm_cluster(folder: Path, cpus: Optional[int] = None) -> Iterator[dict]:
    """Start the cluster in ``folder`` (which must not exist yet); yields the environment its
    commands need (SLURM_CONF), and stops exactly the daemons it started, however the block ends."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True)
    for part in ("state", "spool"):
        (folder / part).mkdir()
    host = socket.gethostname().split(".")[0]
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
    conf = folder / "slurm.conf"
    conf.write_text(configuration(folder, host, cpus or os.cpu_count() or 1, memory_mb))
    environment = {"SLURM_CONF": str(conf)}
    daemons = []
    try:
        daemons.append(start_munge(folder))
        for program in ("slurmctld", "slurmd"):
            daemons.append(subprocess.Popen([program, "-D", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, env={**os.environ, **environment}))
        wait_for(lambda: node_state(environment) == "idle", "idle node", *daemons)
        yield environment
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def node_state(environment: dict) -> str:
    done = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True,
                          env={**os.environ, **environment})
    return done.stdout.strip()


def main() -> None:
    problem = why_not_here()
    if problem:
        sys.exit(f"slurm_cluster.py: {problem}")
    with slurm_cluster(Path(sys.argv[1])) as environment:
        print(f"export SLURM_CONF={environment['SLURM_CONF']}   # then sbatch, squeue ...; Ctrl-C stops the cluster")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
