"""Throwaway Redis Clusters for tests that abuse them: kill a master, restart it, reshard under load.

``ThrowawayCluster`` runs six ``redis-server`` processes in cluster mode on free loopback ports, each
in its own folder (``nodes.conf``, ``redis.log``) under a temporary directory, and joins them with
``redis-cli --cluster create --cluster-replicas 1``: three masters, three replicas. The shared cluster
of ``.ci/services.sh`` (``FS_TEST_REDIS_CLUSTER_URL``) is for tests that only read and write; a test
that kills or reshards starts one of these through the ``redis_cluster_factory`` fixture.

Node state is read with a few lines of RESP over a socket (``command``), not with redis-py, so the
helpers see exactly what each node answers and work whatever redis-py version parses replies.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CLUSTER_SLOTS = 16384
# A node's cluster bus listens on its port + 10000, which must still be a port (<= 65535).
BUS_PORT_OFFSET = 10000
MAX_NODE_PORT = 65535 - BUS_PORT_OFFSET
DEFAULT_NODE_TIMEOUT_MS = 2000


class RedisReplyError(Exception):
    """A node answered a command with an error reply."""


# ---------------------------------------------------------------- RESP over a socket


def _encode(args: Sequence[object]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(f: Any) -> Any:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed in the middle of a reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisReplyError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("connection closed in the middle of a reply")
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise ConnectionError(f"not a RESP2 reply: {line[:60]!r}")


def command(port: int, *args: object, timeout: float = 2.0) -> Any:
    """Send one command to the node on 127.0.0.1:port and return its decoded RESP2 reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_encode(args))
        with s.makefile("rb") as f:
            return _read_reply(f)


def pings(port: int, timeout: float = 0.5) -> bool:
    try:
        return command(port, "PING", timeout=timeout) == "PONG"
    except (OSError, RedisReplyError):
        return False


def cluster_info(port: int) -> dict[str, str]:
    text = command(port, "CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def cluster_nodes(port: int) -> list[dict[str, Any]]:
    """CLUSTER NODES as the node on ``port`` sees it: ``id``, ``port``, ``flags`` (a set), ``master``
    (the master's id, or None), ``slots`` (count of slots it serves), ``link``."""
    nodes = []
    for line in command(port, "CLUSTER", "NODES").splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        addr = fields[1].split("@", 1)[0]
        slots = 0
        for item in fields[8:]:
            if item.startswith("["):  # a slot being imported or migrated, not served yet
                continue
            start, _, end = item.partition("-")
            slots += int(end or start) - int(start) + 1
        nodes.append(
            {
                "id": fields[0],
                "port": int(addr.rsplit(":", 1)[1] or 0),
                "flags": set(fields[2].split(",")),
                "master": None if fields[3] == "-" else fields[3],
                "link": fields[7],
                "slots": slots,
            }
        )
    return nodes


def slot_ranges(port: int) -> list[tuple[int, int, int]]:
    """CLUSTER SLOTS as the node on ``port`` sees it: sorted ``(first, last, master port)``."""
    return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in command(port, "CLUSTER", "SLOTS"))


# ---------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As redis-server binds: a port in TIME_WAIT is free to it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_range() -> tuple[int, int]:
    """Where to look for node ports: below the kernel's ephemeral range, bus ports included, so
    outgoing connections do not take them between the probe and the bind (when that leaves room)."""
    low, high = 10000, MAX_NODE_PORT
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return low, high
    if ephemeral_low - BUS_PORT_OFFSET - 1 - low >= 2000:
        high = min(high, ephemeral_low - BUS_PORT_OFFSET - 1)
    return low, high


def free_node_ports(count: int = 6) -> list[int]:
    """``count`` loopback ports <= 55535 that are free, and whose bus ports (+10000) are free too."""
    low, high = _port_range()
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(2000):
        port = random.randint(low, high)
        if {port, port + BUS_PORT_OFFSET} & taken:
            continue
        if _port_free(port) and _port_free(port + BUS_PORT_OFFSET):
            chosen.append(port)
            taken.update((port, port + BUS_PORT_OFFSET))
            if len(chosen) == count:
                return chosen
    raise RuntimeError(
        f"found only {len(chosen)} free node ports in {low}..{high} (bus ports +{BUS_PORT_OFFSET})"
    )


# ---------------------------------------------------------------- the cluster


class ThrowawayCluster:
    """Six redis-server processes (three masters, three replicas) in cluster mode on loopback.

    Build one with ``ThrowawayCluster.create(workdir, server_bin, cli_bin)`` (or the
    ``redis_cluster_factory`` fixture, which also stops it). Ports are node ports; a master's slots
    move to its replica when it is killed, after the node timeout (``node_timeout_ms``, 2 s) plus an
    election of about a second.
    """

    def __init__(
        self,
        workdir: Path,
        ports: Sequence[int],
        server_bin: str,
        cli_bin: str,
        *,
        node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS,
        extra_args: Sequence[str] = (),
    ) -> None:
        if len(ports) != 6:
            raise ValueError("a throwaway cluster has six nodes")
        if any(p > MAX_NODE_PORT for p in ports):
            raise ValueError(
                f"node ports must be <= {MAX_NODE_PORT} (the cluster bus is port + {BUS_PORT_OFFSET})"
            )
        self.workdir = workdir
        self._ports = list(ports)
        self.server_bin = server_bin
        self.cli_bin = cli_bin
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = list(extra_args)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._ids: dict[int, str] = {}
        self._reshards: list[tuple[subprocess.Popen[bytes], Path]] = []

    # -------------------------------------------------------- life cycle

    @classmethod
    def create(
        cls,
        workdir: Path,
        server_bin: str,
        cli_bin: str,
        *,
        attempts: int = 3,
        timeout: float = 30.0,
        **options: Any,
    ) -> ThrowawayCluster:
        """Start six nodes on free ports, join them and wait until the cluster is ok and every replica
        is linked to its master. A port taken between the probe and the bind means another try on new
        ports; on failure every process started is stopped."""
        last_error: Exception | None = None
        for attempt in range(attempts):
            cluster = cls(workdir / f"try{attempt}", free_node_ports(6), server_bin, cli_bin, **options)
            try:
                cluster.start(timeout=timeout)
            except Exception as exc:
                cluster.stop()
                last_error = exc
                continue
            return cluster
        raise RuntimeError(f"could not start a throwaway Redis Cluster in {attempts} tries: {last_error}")

    def _node_dir(self, port: int) -> Path:
        return self.workdir / str(port)

    def _log_tail(self, port: int, chars: int = 1500) -> str:
        log = self._node_dir(port) / "redis.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"

    def _spawn(self, port: int, timeout: float = 10.0) -> None:
        d = self._node_dir(port)
        d.mkdir(parents=True, exist_ok=True)
        # nodes.conf stays in the folder, so a restarted node keeps its id and rejoins the cluster.
        args = [
            self.server_bin,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(d / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--daemonize", "no",
            "--dir", str(d),
            "--logfile", str(d / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._procs[port] = proc
        deadline = time.monotonic() + timeout
        while not pings(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not come up:\n{self._log_tail(port)}")
            time.sleep(0.05)

    def start(self, timeout: float = 30.0) -> None:
        for port in self._ports:
            self._spawn(port)
        create = subprocess.run(
            [self.cli_bin, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self._ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if create.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({create.returncode}):\n{create.stdout}{create.stderr}"
            )
        self._ids = {p: command(p, "CLUSTER", "MYID") for p in self._ports}
        self.wait_ok(timeout, replicas_linked=True, known_nodes=6)

    def stop(self) -> None:
        """Kill every node and any reshard still running (throwaway data: no graceful shutdown)."""
        for proc, _log in self._reshards:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for port in list(self._procs):
            self.kill(port)

    def __enter__(self) -> ThrowawayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------- nodes

    @property
    def ports(self) -> list[int]:
        """All six node ports, live or not."""
        return list(self._ports)

    def alive(self, port: int) -> bool:
        proc = self._procs.get(port)
        return proc is not None and proc.poll() is None

    def live_ports(self) -> list[int]:
        return [p for p in self._ports if self.alive(p)]

    @property
    def url(self) -> str:
        """A seed node's URL: the first live node."""
        live = self.live_ports()
        if not live:
            raise RuntimeError("no node of the throwaway cluster is running")
        return f"redis://127.0.0.1:{live[0]}"

    def node_id(self, port: int) -> str:
        return self._ids[port]

    def role(self, port: int) -> tuple[str, int | None]:
        """The node's own ROLE: ``("master", None)`` or ``("slave", master port)``."""
        reply = command(port, "ROLE")
        return (reply[0], None) if reply[0] == "master" else (reply[0], int(reply[2]))

    def masters(self) -> list[int]:
        """Ports of the live nodes that are masters by their own account."""
        return [p for p in self.live_ports() if self.role(p)[0] == "master"]

    def replicas_of(self, master_port: int) -> list[int]:
        return [p for p in self.live_ports() if self.role(p) == ("slave", master_port)]

    def replica_of(self, master_port: int) -> int | None:
        """The port of a live replica of that master, or None."""
        replicas = self.replicas_of(master_port)
        return replicas[0] if replicas else None

    def kill(self, port: int) -> None:
        """SIGKILL the node, as a crash would; its folder (nodes.conf) stays for ``restart``."""
        proc = self._procs.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()

    def restart(self, port: int) -> None:
        """Start the node again (killing it first if it runs) from its nodes.conf: same id, and it
        rejoins the cluster (a former master comes back as a replica of its promoted replica)."""
        self.kill(port)
        self._spawn(port)

    # -------------------------------------------------------- slots

    def _problem(self, replicas_linked: bool = False, known_nodes: int | None = None) -> str | None:
        live = self.live_ports()
        if not live:
            return "no node is running"
        views: dict[int, list[tuple[int, int, int]]] = {}
        for port in live:
            try:
                info = cluster_info(port)
                if info.get("cluster_state") != "ok":
                    return f"node {port}: cluster_state:{info.get('cluster_state')}"
                if known_nodes is not None and info.get("cluster_known_nodes") != str(known_nodes):
                    return f"node {port} knows {info.get('cluster_known_nodes')} nodes, not {known_nodes}"
                ranges = slot_ranges(port)
                if replicas_linked and self.role(port)[0] == "slave":
                    repl = command(port, "INFO", "replication")
                    if "master_link_status:up" not in repl:
                        return f"replica {port}: link to its master not up"
            except (OSError, RedisReplyError) as exc:
                return f"node {port}: {exc}"
            covered = sum(last - first + 1 for first, last, owner in ranges if owner in live)
            if covered != CLUSTER_SLOTS:
                return f"node {port}: live masters cover {covered} of {CLUSTER_SLOTS} slots ({ranges})"
            views[port] = ranges
        first = live[0]
        for port, ranges in views.items():
            if ranges != views[first]:
                return f"nodes {first} and {port} disagree on slot owners: {views[first]} vs {ranges}"
        return None

    def wait_ok(
        self, timeout: float = 30.0, *, replicas_linked: bool = False, known_nodes: int | None = None
    ) -> float:
        """Wait until every live node says cluster_state:ok, all 16384 slots are served by live masters
        and every live node agrees who serves which (with ``replicas_linked``: also every replica's link
        to its master is up). Return the seconds it took; TimeoutError says what was still wrong."""
        t0 = time.monotonic()
        while True:
            problem = self._problem(replicas_linked, known_nodes)
            if problem is None:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"throwaway cluster {self._ports} not ok after {timeout:.0f}s: {problem}")
            time.sleep(0.1)

    def slot_owner(self, slot: int, via: int | None = None) -> int:
        """The port of the master serving ``slot``, as node ``via`` (default: the first live) sees it."""
        for first, last, owner in slot_ranges(via or self.live_ports()[0]):
            if first <= slot <= last:
                return owner
        raise LookupError(f"slot {slot} is not served")

    def slot_counts(self, via: int | None = None) -> dict[int, int]:
        """Slots per master port, as node ``via`` (default: the first live) sees it."""
        counts: dict[int, int] = {}
        for first, last, owner in slot_ranges(via or self.live_ports()[0]):
            counts[owner] = counts.get(owner, 0) + last - first + 1
        return counts

    def key_slot(self, key: str) -> int:
        return command(self.live_ports()[0], "CLUSTER", "KEYSLOT", key)

    # -------------------------------------------------------- resharding

    def reshard(
        self, src_port: int, dst_port: int, slots: int, *, pipeline: int = 10, timeout_ms: int = 5000
    ) -> subprocess.Popen[bytes]:
        """Start ``redis-cli --cluster reshard`` moving ``slots`` slots (and their keys, ``pipeline``
        keys per MIGRATE) from one master to another, and return at once: a test can run load while it
        works. Its output goes to a log in the cluster's folder (``reshard_output``)."""
        log = self.workdir / f"reshard-{len(self._reshards)}.log"
        args = [
            self.cli_bin, "--cluster", "reshard", f"127.0.0.1:{src_port}",
            "--cluster-from", self.node_id(src_port),
            "--cluster-to", self.node_id(dst_port),
            "--cluster-slots", str(slots),
            "--cluster-pipeline", str(pipeline),
            "--cluster-timeout", str(timeout_ms),
            "--cluster-yes",
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self._reshards.append((proc, log))
        return proc

    def reshard_output(self, proc: subprocess.Popen[bytes]) -> str:
        for p, log in self._reshards:
            if p is proc:
                return log.read_text(errors="replace")
        raise LookupError("not a reshard of this cluster")

    def reshard_and_wait(
        self, src_port: int, dst_port: int, slots: int, *, pipeline: int = 10, timeout: float = 60.0
    ) -> str:
        """The blocking form of ``reshard``: wait for it, raise with its output if it fails, then wait
        until the cluster is ok again; return its output."""
        proc = self.reshard(src_port, dst_port, slots, pipeline=pipeline)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TimeoutError(
                f"reshard still running after {timeout:.0f}s:\n{self.reshard_output(proc)[-2000:]}"
            ) from None
        output = self.reshard_output(proc)
        if rc != 0:
            raise RuntimeError(f"redis-cli --cluster reshard exited {rc}:\n{output[-2000:]}")
        self.wait_ok(timeout)
        return output


# ---------------------------------------------------------------- node statistics


def info(port: int, section: str) -> dict[str, str]:
    """One ``INFO`` section of a node as ``{field: value}`` (values as the node wrote them)."""
    text = command(port, "INFO", section)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def command_calls(port: int) -> dict[str, int]:
    """Calls per command since the last ``CONFIG RESETSTAT`` (``INFO commandstats``), e.g. ``{"mget": 3}``."""
    calls = {}
    for name, value in info(port, "commandstats").items():
        fields = dict(item.split("=", 1) for item in value.split(","))
        calls[name.removeprefix("cmdstat_")] = int(fields["calls"])
    return calls


def error_counts(port: int) -> dict[str, int]:
    """Error replies per kind since the last ``CONFIG RESETSTAT`` (``INFO errorstats``), e.g. ``{"MOVED": 12}``."""
    return {name.removeprefix("errorstat_"): int(value.split("=", 1)[1])
            for name, value in info(port, "errorstats").items()}


def wait_replicated(cluster: ThrowawayCluster, timeout: float = 10.0) -> float:
    """Wait until every live replica has received everything its master had written when this was called
    (its ``slave_repl_offset`` reaches the master's ``master_repl_offset``), as ``WAIT`` on the writers'
    connections would; return the seconds it took."""
    t0 = time.monotonic()
    targets = {}
    for master in cluster.masters():
        offset = int(info(master, "replication")["master_repl_offset"])
        for replica in cluster.replicas_of(master):
            targets[replica] = offset
    while True:
        behind = {r: o for r, o in targets.items() if int(info(r, "replication")["slave_repl_offset"]) < o}
        if not behind:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"replicas still behind their masters after {timeout:.0f}s: {behind}")
        time.sleep(0.02)


def listed_replicas(port: int) -> dict[int, list[int]]:
    """CLUSTER SLOTS as the node on ``port`` sees it: master port -> the replica ports it lists for its
    slots (Redis leaves out a replica that is failed or has not reported a replication offset yet)."""
    listed: dict[int, list[int]] = {}
    for entry in command(port, "CLUSTER", "SLOTS"):
        listed.setdefault(int(entry[2][1]), [int(node[1]) for node in entry[3:]])
    return listed


def wait_replicas_listed(cluster: ThrowawayCluster, timeout: float = 15.0) -> float:
    """Wait until every live node's CLUSTER SLOTS lists a replica for every master; return the seconds."""
    t0 = time.monotonic()
    while True:
        views = {p: listed_replicas(p) for p in cluster.live_ports()}
        if all(replicas for view in views.values() for replicas in view.values()):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"CLUSTER SLOTS still lists masters without replicas after {timeout:.0f}s: {views}")
        time.sleep(0.05)


# ---------------------------------------------------------------- a slot stopped half-way through a move


def begin_slot_move(cluster: ThrowawayCluster, slot: int, src: int, dst: int, keys: Sequence[str]) -> None:
    """Mark ``slot`` migrating from master ``src`` to master ``dst`` and move only ``keys`` (of that
    slot) to ``dst``, as ``redis-cli --cluster reshard`` does between two MIGRATEs: the other keys of
    the slot stay on ``src``, and ``src`` answers ``ASK`` for the moved ones."""
    command(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(src))
    command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(dst))
    if keys:
        command(src, "MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)


def finish_slot_move(cluster: ThrowawayCluster, slot: int, src: int, dst: int) -> None:
    """Move the rest of the slot's keys and give the slot to ``dst`` on every master."""
    while True:
        keys = command(src, "CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not keys:
            break
        command(src, "MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
    owner = cluster.node_id(dst)
    command(dst, "CLUSTER", "SETSLOT", slot, "NODE", owner)
    command(src, "CLUSTER", "SETSLOT", slot, "NODE", owner)
    for port in cluster.masters():
        if port not in (src, dst):
            command(port, "CLUSTER", "SETSLOT", slot, "NODE", owner)
