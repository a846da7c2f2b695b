"""Real clusters on this machine for the launcher tests: a single-node SLURM cluster (munge,
MariaDB, slurmdbd, slurmctld, slurmd) and a local Ray head, each started with files written
under a folder of its own and stopped by the process ids it started. Every daemon listens on
127.0.0.1 only, on free ports, so a cluster the machine already has is neither used nor
disturbed.

`python tests/clusters.py slurm|ray FOLDER` starts one until Ctrl-C or SIGTERM, for trying
commands by hand (it prints the environment to export; the Ray head ignores FOLDER).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SLURM_DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_slurm() -> str | None:
    """Why this machine cannot run the SLURM cluster, or None when it can."""
    sbin = ["munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd"]
    absent = [name for name in sbin if shutil.which(name, path=_sbin_path()) is None]
    if absent:
        return (
            f"{', '.join(absent)} not installed (Debian: apt-get install slurm-wlm slurmdbd "
            "munge mariadb-server; .ci/run installs them)"
        )
    if os.geteuid() != 0:
        return "the SLURM test cluster's daemons run as root (slurmd starts jobs as their user)"
    return None


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])


def _wait(what: str, check, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s\n{tail}")


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(pids: list[int], timeout: float = 15) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            print(f"pid {pid} still alive after SIGTERM: killed", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)


class SlurmCluster:
    """One node (this machine, as 127.0.0.1) with all its CPUs in partition `debug`, and job
    accounting (so that `sacct`, which submitit polls, answers as on a real cluster)."""

    def __init__(self, root: Path, cpus: int | None = None) -> None:
        self.root = root
        self.cpus = cpus or os.cpu_count() or 1
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self._pids: list[int] = []
        self._db: subprocess.Popen | None = None

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, "PATH": _sbin_path()}
        return subprocess.run(args, env=env, capture_output=True, text=True, **kwargs)

    def _daemon(self, name: str, pid_file: Path, log: Path, *args: str) -> None:
        """Start a daemon that forks into the background and writes `pid_file`."""
        done = self._run(*args, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed to start: {done.stderr or done.stdout}")
        _wait(f"{name} (pid file {pid_file})", lambda: _alive(_pid(pid_file)), 30, log)
        self._pids.append(_pid(pid_file))

    def start(self) -> SlurmCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SlurmCluster:
        r = self.root
        for sub in ("state", "spool", "log", "munge", "db"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        ports = {k: free_port() for k in ("db", "dbd", "ctld", "d")}
        self._start_munge()
        self._start_mariadb(ports["db"])
        self._write_configs(ports)
        self._daemon("slurmdbd", r / "slurmdbd.pid", r / "log/slurmdbd.log", "slurmdbd")
        _wait(
            "slurmdbd",
            lambda: self._run("sacctmgr", "-n", "list", "cluster").returncode == 0,
            30,
            r / "log/slurmdbd.log",
        )
        self._run("sacctmgr", "-i", "add", "cluster", "fitscope")
        self._daemon(
            "slurmctld",
            r / "slurmctld.pid",
            r / "log/slurmctld.log",
            "slurmctld",
            "-f",
            str(self.conf),
        )
        self._daemon(
            "slurmd", r / "slurmd.pid", r / "log/slurmd.log", "slurmd", "-f", str(self.conf)
        )
        _wait(
            "the node (sinfo idle)",
            lambda: "idle" in self._run("sinfo", "-h", "-o", "%T").stdout,
            60,
            r / "log/slurmctld.log",
        )
        return self

    def _start_munge(self) -> None:
        m = self.root / "munge"
        os.chmod(m, 0o700)
        key = m / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        self.munge_socket = m / "munge.socket"
        self._daemon(
            "munged",
            m / "munged.pid",
            m / "munged.log",
            "munged",
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={m / 'munged.pid'}",
            f"--log-file={m / 'munged.log'}",
            f"--seed-file={m / 'munged.seed'}",
        )

    def _start_mariadb(self, port: int) -> None:
        db, r = self.root / "db", self.root
        self.db_socket = r / "mysql.sock"
        if not (db / "mysql").exists():
            done = self._run(
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={db}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                timeout=120,
            )
            if done.returncode != 0:
                raise RuntimeError(f"mariadb-install-db failed: {done.stderr[-2000:]}")
        log = r / "log/mariadb.log"
        self._db = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={db}",
                f"--socket={self.db_socket}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={r / 'mariadb.pid'}",
                f"--log-error={log}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
            ],
            env={**os.environ, "PATH": _sbin_path()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def sql(statement: str) -> subprocess.CompletedProcess:
            return self._run(
                "mariadb",
                "--no-defaults",
                f"--socket={self.db_socket}",
                "-u",
                "root",
                "-e",
                statement,
            )

        _wait("mariadb", lambda: sql("SELECT 1").returncode == 0, 60, log)
        done = sql(
            "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb: {done.stderr}")

    def _write_configs(self, ports: dict[str, int]) -> None:
        r, h = self.root, self.host
        memory = max(1000, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 2048)
        auth = f"AuthInfo=socket={self.munge_socket}"
        self.conf.write_text(
            f"""ClusterName=fitscope
SlurmctldHost={h}(127.0.0.1)
SlurmctldPort={ports["ctld"]}
SlurmdPort={ports["d"]}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
{auth}
SlurmUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports["dbd"]}
AccountingStoragePass={self.munge_socket}
MpiDefault=none
ReturnToService=2
KillWait=2
MinJobAge=600
SchedulerParameters=defer_batch
NodeName={h} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={h} Default=YES MaxTime=INFINITE State=UP
"""
        )
        dbd = r / "slurmdbd.conf"
        dbd.write_text(
            f"""{auth}
DbdAddr=127.0.0.1
DbdHost={h}
DbdPort={ports["dbd"]}
SlurmUser=root
PidFile={r}/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports["db"]}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
"""
        )
        os.chmod(dbd, 0o600)

    def stop(self) -> None:
        if self._pids:  # the jobs first, while slurmd can still end them
            self._run("scancel", "--full", "--user", "root", timeout=30)
            with contextlib.suppress(RuntimeError):
                _wait("the jobs to end", lambda: not self._run("squeue", "-h").stdout, 30)
        _stop(list(reversed(self._pids)))  # slurmd, slurmctld, slurmdbd, then munged
        self._pids.clear()
        if self._db is not None:  # mariadbd, a child of this process
            self._db.terminate()
            try:
                self._db.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._db.kill()
                self._db.wait()
            self._db = None


class RayCluster:
    """A Ray head on 127.0.0.1 (`ray start --head --block`, in a process group of its own that
    `stop` ends). `env` points Ray at it (`RAY_ADDRESS`, which `address: auto` reads) and keeps
    Ray's clients on loopback: Ray replaces 127.0.0.1 in an address by the machine's network
    address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (its single-machine mode), and the head
    started with that setting listens on 127.0.0.1 only."""

    def __init__(self, cpus: int | None = None) -> None:
        self.cpus = cpus or os.cpu_count() or 1
        self.port = free_port()
        # a short folder: Ray's unix sockets live below it (paths of at most 107 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="fsray"))
        self.env = {
            "RAY_ADDRESS": f"127.0.0.1:{self.port}",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self._head: subprocess.Popen | None = None

    def start(self) -> RayCluster:
        ray = Path(sys.executable).with_name("ray")
        log = self.root / "head.log"
        with open(log, "w") as out:
            self._head = subprocess.Popen(
                [
                    str(ray),
                    "start",
                    "--head",
                    "--block",
                    "--node-ip-address=127.0.0.1",
                    f"--port={self.port}",
                    f"--num-cpus={self.cpus}",
                    "--num-gpus=0",
                    "--include-dashboard=false",
                    "--disable-usage-stats",
                    f"--temp-dir={self.root}",
                ],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait("the Ray head", lambda: self._ready(log), 120, log)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self, log: Path) -> bool:
        if self._head.poll() is not None:
            raise RuntimeError(f"ray start ended: {log.read_text(errors='replace')[-3000:]}")
        return "Ray runtime started" in log.read_text(errors="replace")

    def stop(self) -> None:
        if self._head is None:
            return
        # Ray's processes take their time over SIGTERM (20 s and more): a short grace, then
        # SIGKILL to the whole group (its state is this cluster's own temporary folder)
        for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 30)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._head.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._head.wait(timeout=grace)
        self._head = None
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    kind, folder = sys.argv[1], Path(sys.argv[2]).resolve()
    cluster = SlurmCluster(folder).start() if kind == "slurm" else RayCluster().start()
    print(" ".join(f"export {k}={v}" for k, v in cluster.env.items()))
    print(f"{kind} cluster up; Ctrl-C or SIGTERM stops it", flush=True)
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
