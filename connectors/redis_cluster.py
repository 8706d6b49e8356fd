"""Redis Cluster for the online store: which node serves each key, one command per node, and the
key-by-key path that follows the cluster while slots move or a master fails over.

- **Slots.** A key's slot is CRC16 of its hash tag (the text between the first ``{`` and the next
  ``}``) modulo 16384, as Redis computes it (``key_slot``). The store's cluster keys carry the encoded
  entity key as their tag (``online_redis``), so every view's row of one entity lives in one slot.
- **Topology.** ``CLUSTER SLOTS`` of any reachable node gives the master (and replicas) of every slot.
  It is read at start, and again whenever a reply says the map is wrong (``MOVED``), a node does not
  answer, or the cluster is failing over; at most one refresh runs at a time (``_REFRESH_GAP``).
- **One command per node.** Reads and writes are grouped by node and the nodes are asked in parallel.
  A node reads all its keys with one ``MGET`` when they share a slot, else with one call of
  ``redis_scripts.CLUSTER_READ_LUA`` (keys of many slots; Redis >= 7). Writes are pipelined per node
  (``redis_pipeline``).
- **Following the cluster.** Keys a node does not serve (their slot moved, or is migrating and the
  key has left) come back marked, and go key by key (``_follow``): ``MOVED`` updates the map and asks
  the new owner, ``ASK`` sends ``ASKING`` and the command to the importing node, ``TRYAGAIN``,
  ``CLUSTERDOWN`` and unreachable nodes wait a little, refresh the map and try again. Reads give up
  after ``_READ_ROUNDS`` rounds, or when a node fails twice with the map read again in between (a lookup
answers 503 while a failed master's slots have no owner);
  writes keep trying until ``write_retry_seconds`` have passed, so a failover under a materialization
  or a stream job costs a pause, not an error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from binascii import crc_hqx
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np

from connectors import redis_scripts
from connectors.redis_async import _AsyncRedis, _pack
from connectors.redis_pipeline import get_connection

SLOTS = 16384
_REFRESH_GAP = 0.05  # seconds between two refreshes of the slot map
# The map is also read again once it is this old, without any error asking for it: replicas that join
# (or that CLUSTER SLOTS leaves out until they report a replication offset) start serving reads then.
_MAP_MAX_AGE = 5.0
_READ_ROUNDS = 4  # key-by-key rounds of a read before it gives up
_PAUSES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # waits between write rounds (the last one repeats)
_READ_SCRIPT = redis_scripts.CLUSTER_READ_LUA.encode()
_ASKING = _pack(b"ASKING")
_CLUSTER_SLOTS = _pack(b"CLUSTER", b"SLOTS")

Address = tuple[str, int]


def key_slot(key: bytes) -> int:
    """The cluster slot of a Redis key (hash tags included)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return crc_hqx(key, 0) & (SLOTS - 1)


def tag_slots(tags: list[bytes]) -> np.ndarray:
    """The slot of each hash tag (the text a ``{...}`` of a key holds; it has no ``}``)."""
    return np.fromiter((crc_hqx(t, 0) for t in tags), dtype=np.int64, count=len(tags)) & (SLOTS - 1)


class ClusterUnavailableError(Exception):
    """Some keys could not be read or written on the cluster in time (the store re-raises it as a
    ``BackendUnavailableError``)."""


class _NodeDown(Exception):
    """A node did not answer (refused, reset, timed out)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Topology:
    """The slot map: per slot, the index (in ``nodes``) of its master and of a replica (-1: none)."""

    seeds: list[Address]
    nodes: list[Address] = field(default_factory=list)
    master: np.ndarray = field(default_factory=lambda: np.full(SLOTS, -1, dtype=np.int64))
    replica: np.ndarray = field(default_factory=lambda: np.full(SLOTS, -1, dtype=np.int64))
    stale: bool = True
    refreshed_at: float = 0.0
    version: int = 0

    def index(self, address: Address) -> int:
        try:
            return self.nodes.index(address)
        except ValueError:
            self.nodes.append(address)
            return len(self.nodes) - 1

    def apply(self, reply: list, asked: Address) -> None:
        """Take a ``CLUSTER SLOTS`` reply of node ``asked`` as the new map."""
        master = np.full(SLOTS, -1, dtype=np.int64)
        replica = np.full(SLOTS, -1, dtype=np.int64)
        for entry in reply:
            start, end, owner, *replicas = entry
            master[int(start):int(end) + 1] = self.index(self._address(owner, asked))
            if replicas:  # the first replica the master lists serves that range's replica reads
                replica[int(start):int(end) + 1] = self.index(self._address(replicas[0], asked))
        self.master, self.replica = master, replica
        self.stale = False
        self.refreshed_at = time.monotonic()
        self.version += 1

    @staticmethod
    def _address(node: list, asked: Address) -> Address:
        host = _text(node[0]) if node[0] else ""
        # An empty or unknown host means "the host you asked" (a node announcing no address).
        return (host if host and host != "?" else asked[0], int(node[1]))

    def old(self) -> bool:
        return time.monotonic() - self.refreshed_at > _MAP_MAX_AGE

    def moved(self, slot: int, address: Address) -> None:
        """A ``MOVED`` reply: the slot's master is ``address`` (and the rest of the map may be old)."""
        self.master[slot] = self.index(address)
        self.stale = True

    def candidates(self) -> list[Address]:
        """Nodes to ask for the map: the known masters first, then the other known nodes and seeds."""
        masters = [self.nodes[i] for i in np.unique(self.master[self.master >= 0]).tolist()]
        rest = [a for a in self.nodes + self.seeds if a not in masters]
        return list(dict.fromkeys(masters + rest))


def parse_address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _redirect(reply: Exception) -> tuple[str, int, Address | None]:
    """What an error reply says: ("moved"|"ask", slot, address), ("retry", -1, None) for a cluster
    that is busy or failing over, ("down", -1, None) for a node that does not answer; anything else
    is a real error and raised."""
    if isinstance(reply, _NodeDown):
        return "down", -1, None
    slot_id = getattr(reply, "slot_id", None)  # redis-py's MovedError/AskError parsed it already
    if slot_id is not None:
        kind = "ask" if type(reply).__name__ == "AskError" else "moved"
        return kind, int(slot_id), (reply.host, int(reply.port))
    text = str(reply)
    word = text.split(" ", 1)[0]
    if word in ("MOVED", "ASK"):
        _, slot, address = text.split()
        return word.lower(), int(slot), parse_address(address)
    if word in ("TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "LOADING", "READONLY", "FSREDIRECT"):
        return "retry", -1, None
    if type(reply).__name__ in ("TryAgainError", "ClusterDownError", "MasterDownError", "BusyLoadingError",
                                "ReadOnlyError"):
        return "retry", -1, None
    raise reply


@dataclass
class _Round:
    """One round of the key-by-key path: commands per (node, replica connection?) and a wait first."""

    requests: dict[tuple[Address, bool], list[bytes]]
    pause: float = 0.0


def _follow(topology: Topology, slots: list[int], commands: list[bytes], *, replicas: bool,
            prologue: bytes | None, deadline: float | None,
            rounds: int = _READ_ROUNDS) -> Generator[_Round, dict, list]:
    """Run one single-key command per key, each sent to the node serving its key, until every one
    has a real reply. Yields rounds (a driver runs them and sends the replies back) and returns the
    replies in order. ``prologue`` goes first on every connection used (the script load of writes).
    Gives up with ``ClusterUnavailableError`` after ``rounds`` rounds, or at ``deadline`` when given."""
    n = len(commands)
    results: list = [None] * n
    pending = list(range(n))
    asking: dict[int, Address] = {}
    down_once: set[int] = set()
    pause = 0.0
    attempt = 0
    last_error: Exception | None = None
    while pending:
        if deadline is None and attempt >= rounds or deadline is not None and attempt and time.monotonic() > deadline:
            raise ClusterUnavailableError(f"{len(pending)} key(s) not served after {attempt} round(s): {last_error}")
        attempt += 1
        requests: dict[tuple[Address, bool], list[bytes]] = {}
        sent: dict[tuple[Address, bool], list[tuple[int, bool]]] = {}
        waiting: list[int] = []
        for i in pending:
            asked = i in asking
            if asked:
                target, read_replica = asking.pop(i), False
            else:
                node = topology.master[slots[i]]
                if replicas and attempt == 1 and topology.replica[slots[i]] >= 0:
                    node, read_replica = topology.replica[slots[i]], True
                else:
                    read_replica = False
                if node < 0:  # no master serves the slot right now
                    waiting.append(i)
                    topology.stale = True
                    continue
                target = topology.nodes[node]
            where = (target, read_replica)
            if where not in requests:
                requests[where] = [prologue] if prologue else []
                sent[where] = []
            requests[where] += [_ASKING, commands[i]] if asked else [commands[i]]
            sent[where].append((i, asked))
        replies = (yield _Round(requests, pause)) if requests else {}
        pending = waiting
        pause = 0.0
        for where, indices in sent.items():
            answers = iter(replies[where][1 if prologue else 0:])
            for i, asked in indices:
                if asked:
                    next(answers)  # ASKING's own reply (OK, or the error the command gets too)
                answer = next(answers)
                if not isinstance(answer, Exception):
                    results[i] = answer
                    continue
                kind, slot, address = _redirect(answer)
                last_error = answer
                if kind == "down" and deadline is None and i in down_once:
                    # A read does not wait for a failover: its node failed twice, the map was read again
                    # in between and still names it, so the lookup answers "unavailable" now.
                    raise ClusterUnavailableError(f"{where[0][0]}:{where[0][1]} does not answer: {answer}")
                if kind == "down":
                    down_once.add(i)
                if kind == "moved":
                    topology.moved(slot, address)
                elif kind == "ask":
                    asking[i] = address
                else:
                    topology.stale = True
                    pause = _PAUSES[min(attempt, len(_PAUSES)) - 1]
                pending.append(i)
        if waiting:
            pause = max(pause, _PAUSES[min(attempt, len(_PAUSES)) - 1])
    return results


class ClusterClient:
    """Connections to the nodes of one cluster and the slot map, for the Redis online store."""

    def __init__(self, url_kwargs: dict, socket_timeout: float, retry, read_from_replicas: bool) -> None:
        import redis

        self._redis = redis
        self._exc = redis.exceptions
        self.kwargs = {k: v for k, v in url_kwargs.items() if k not in ("host", "port", "db")}
        self.timeout = socket_timeout
        self.retry = retry
        self.read_from_replicas = read_from_replicas
        self.topology = Topology(seeds=[(url_kwargs.get("host") or "127.0.0.1", int(url_kwargs.get("port") or 6379))])
        self._sync: dict[tuple[Address, bool], Any] = {}
        self._aio: dict[tuple[Address, bool], _AsyncRedis | None] = {}
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="redis-cluster")
        self._refreshing: asyncio.Future | None = None
        self.unavailable = (self._exc.ConnectionError, self._exc.TimeoutError, OSError)

    # -- connections -------------------------------------------------------------------------------
    def client(self, address: Address, replica: bool = False):
        """The redis-py client of one node (a replica's connections say ``READONLY`` first)."""
        key = (address, replica)
        client = self._sync.get(key)
        if client is None:
            with self._lock:
                client = self._sync.get(key)
                if client is None:
                    kwargs = dict(self.kwargs, host=address[0], port=address[1], socket_timeout=self.timeout,
                                  socket_connect_timeout=self.timeout, retry=self.retry, retry_on_timeout=False)
                    if replica:
                        kwargs["redis_connect_func"] = _readonly_on_connect
                    client = self._sync[key] = self._redis.Redis(
                        connection_pool=self._redis.ConnectionPool(**kwargs))
        return client

    def _async_client(self, address: Address, replica: bool) -> _AsyncRedis:
        key = (address, replica)
        if key not in self._aio:
            aio = _AsyncRedis.for_pool(self.client(address, replica).connection_pool, self.timeout)
            if aio is not None and replica:
                aio.handshake.append(_pack(b"READONLY"))
            self._aio[key] = aio
        aio = self._aio[key]
        if aio is None:
            raise NotImplementedError("this connection setting has no asyncio equivalent")
        return aio

    # -- the slot map ------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """Read the slot map from the first node that answers (blocking)."""
        with self._refresh_lock:
            top = self.topology
            if not force and not top.stale and top.version:
                return
            if top.version and time.monotonic() - top.refreshed_at < _REFRESH_GAP:
                return
            errors = []
            for address in top.candidates():
                try:
                    reply = self.client(address).execute_command("CLUSTER", "SLOTS")
                except self._exc.RedisError as exc:
                    errors.append(f"{address[0]}:{address[1]}: {exc}")
                    continue
                if reply:
                    top.apply(reply, address)
                    return
                errors.append(f"{address[0]}:{address[1]}: no slots assigned")
            top.refreshed_at = time.monotonic()
            raise ClusterUnavailableError("no cluster node gave the slot map (" + "; ".join(errors) + ")")

    async def refresh_async(self) -> None:
        """``refresh`` on the running loop (one at a time; concurrent callers await the same one)."""
        top = self.topology
        if top.version and (not top.stale or time.monotonic() - top.refreshed_at < _REFRESH_GAP):
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh_async_once())
        await asyncio.shield(self._refreshing)

    async def _refresh_async_once(self) -> None:
        top = self.topology
        errors = []
        for address in top.candidates():
            try:
                (reply,) = await self._async_client(address, False).execute([_CLUSTER_SLOTS])
            except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            if isinstance(reply, Exception) or not reply:
                errors.append(f"{address[0]}:{address[1]}: {reply or 'no slots assigned'}")
                continue
            top.apply(reply, address)
            return
        top.refreshed_at = time.monotonic()
        raise ClusterUnavailableError("no cluster node gave the slot map (" + "; ".join(errors) + ")")

    def ensure_map(self) -> None:
        top = self.topology
        if top.stale or top.old():
            try:
                self.refresh(force=True)
            except ClusterUnavailableError:
                if top.stale or not top.version:
                    raise  # an old but whole map still routes; only a missing or wrong one stops here

    async def ensure_map_async(self) -> None:
        """The map, read again when wrong; when merely old, read again beside this lookup."""
        top = self.topology
        if top.stale:
            await self.refresh_async()
        elif top.old() and (self._refreshing is None or self._refreshing.done()):
            top.refreshed_at = time.monotonic()  # one background refresh per period
            self._refreshing = asyncio.ensure_future(self._refresh_async_once())
            self._refreshing.add_done_callback(_ignore_failure)

    # -- exchanges: commands per node, nodes in parallel -------------------------------------------
    def _exchange_one(self, address: Address, replica: bool, commands: list) -> list:
        pool = self.client(address, replica).connection_pool
        try:
            conn = get_connection(pool)
        except self.unavailable as exc:
            return [_NodeDown(f"{address[0]}:{address[1]}: {exc}")] * len(commands)
        try:
            conn.send_packed_command(commands)
            out = []
            for _ in commands:
                try:
                    out.append(conn.read_response())
                except self._exc.ResponseError as error:
                    out.append(error)
            return out
        except self.unavailable as exc:
            conn.disconnect()
            return [_NodeDown(f"{address[0]}:{address[1]}: {exc}")] * len(commands)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def exchange(self, requests: dict[tuple[Address, bool], list]) -> dict[tuple[Address, bool], list]:
        items = list(requests.items())
        if len(items) == 1:
            (where, commands), = items
            return {where: self._exchange_one(*where, commands)}
        futures = [self._threads.submit(self._exchange_one, *where, commands) for where, commands in items]
        return {where: f.result() for (where, _), f in zip(items, futures)}

    async def _exchange_one_async(self, address: Address, replica: bool, commands: list) -> list:
        try:
            return await self._async_client(address, replica).execute(commands)
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            return [_NodeDown(f"{address[0]}:{address[1]}: {exc}")] * len(commands)

    async def exchange_async(self, requests: dict[tuple[Address, bool], list]) -> dict[tuple[Address, bool], list]:
        items = list(requests.items())
        if len(items) == 1:
            (where, commands), = items
            return {where: await self._exchange_one_async(*where, commands)}
        replies = await asyncio.gather(*(self._exchange_one_async(*where, cmds) for where, cmds in items))
        return {where: reply for (where, _), reply in zip(items, replies)}

    def drive(self, rounds: Generator[_Round, dict, list]) -> list:
        """Run a key-by-key generator (``_follow``) with blocking calls."""
        replies = None
        try:
            while True:
                step = rounds.send(replies)
                if step.pause:
                    time.sleep(step.pause)
                if self.topology.stale:
                    try:
                        self.refresh()
                    except ClusterUnavailableError:
                        pass  # the round's own errors say what is wrong; the next one tries again
                replies = self.exchange(step.requests)
        except StopIteration as done:
            return done.value

    async def drive_async(self, rounds: Generator[_Round, dict, list]) -> list:
        replies = None
        try:
            while True:
                step = rounds.send(replies)
                if step.pause:
                    await asyncio.sleep(step.pause)
                if self.topology.stale:
                    try:
                        await self.refresh_async()
                    except ClusterUnavailableError:
                        pass
                replies = await self.exchange_async(step.requests)
        except StopIteration as done:
            return done.value

    # -- reads -------------------------------------------------------------------------------------
    def _read_plan(self, keys: list[bytes], slots: np.ndarray) -> dict[tuple[Address, bool], tuple]:
        """Per node: the indices of the keys it serves, the one command that reads them and whether
        that is the read script (keys of several slots) rather than ``MGET``."""
        top = self.topology
        if len(slots) and slots.min() == slots.max():  # one slot (one entity, any views): one MGET
            slot = int(slots[0])
            node, replica_read = int(top.master[slot]), False
            if self.read_from_replicas and top.replica[slot] >= 0:
                node, replica_read = int(top.replica[slot]), True
            where = (top.nodes[node] if node >= 0 else ("", -1), replica_read)
            return {where: (np.arange(len(keys)), _pack(b"MGET", *keys), False)}
        owner = top.master[slots]
        replica = np.zeros(len(keys), dtype=bool)
        if self.read_from_replicas:
            candidate = top.replica[slots]
            replica = candidate >= 0
            owner = np.where(replica, candidate, owner)
        plan = {}
        order = np.lexsort((slots, replica, owner))  # each node's keys by slot: one MGET per slot
        sorted_owner, sorted_replica = owner[order], replica[order]
        cuts = np.flatnonzero((sorted_owner[1:] != sorted_owner[:-1]) | (sorted_replica[1:] != sorted_replica[:-1])) + 1
        for group in np.split(order, cuts):
            if not len(group):
                continue
            node = int(owner[group[0]])
            where = (top.nodes[node] if node >= 0 else ("", -1), bool(replica[group[0]]))
            names = [keys[i] for i in group.tolist()]
            ordered = slots[group]
            starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
            by_script = len(starts) > 1
            if by_script:
                sizes = np.diff(np.r_[starts, len(ordered)]).tolist()
                command = _pack(b"EVAL", _READ_SCRIPT, b"0", b"%d" % len(sizes), *[b"%d" % n for n in sizes], *names)
            else:
                command = _pack(b"MGET", *names)
            plan[where] = (group, command, by_script)
        return plan

    def _merge(self, plan: dict, replies: dict, out: list) -> list[int]:
        """Put each node's values into ``out``; return the indices still to read key by key."""
        left: list[int] = []
        for where, (group, _, by_script) in plan.items():
            reply = replies[where][0] if where in replies else _NodeDown("no master serves these slots")
            indices = group.tolist()
            if isinstance(reply, Exception):
                _redirect(reply)  # raises a real error; redirects and unreachable nodes go key by key
                left += indices
                continue
            values, failed = reply if by_script else (reply, [])
            for i, value in zip(indices, values):
                out[i] = value
            left += [indices[int(k) - 1] for k in failed]
        return left

    def _plan_or_empty(self, keys: list[bytes], slots: np.ndarray):
        plan = self._read_plan(keys, slots)
        requests = {where: [command] for where, (_, command, _) in plan.items() if where[0][1] >= 0}
        return plan, requests

    def read(self, keys: list[bytes], slots: np.ndarray) -> list:
        """The value of each key (None where absent), with blocking calls."""
        out: list = [None] * len(keys)
        self.ensure_map()
        plan, requests = self._plan_or_empty(keys, slots)
        left = self._merge(plan, self.exchange(requests) if requests else {}, out)
        if left:
            values = self.drive(self._follow_reads(keys, slots, left))
            for i, value in zip(left, values):
                out[i] = value
        return out

    async def read_async(self, keys: list[bytes], slots: np.ndarray) -> list:
        out: list = [None] * len(keys)
        await self.ensure_map_async()
        plan, requests = self._plan_or_empty(keys, slots)
        left = self._merge(plan, await self.exchange_async(requests) if requests else {}, out)
        if left:
            values = await self.drive_async(self._follow_reads(keys, slots, left))
            for i, value in zip(left, values):
                out[i] = value
        return out

    def _follow_reads(self, keys: list[bytes], slots: np.ndarray, left: list[int]):
        return _follow(self.topology, [int(slots[i]) for i in left], [_pack(b"GET", keys[i]) for i in left],
                       replicas=False, prologue=None, deadline=None)

    # -- writes ------------------------------------------------------------------------------------
    def masters_of(self, slots: np.ndarray) -> np.ndarray:
        return self.topology.master[slots]

    def follow_writes(self, slots: list[int], commands: list[bytes], script: bytes, deadline: float) -> list:
        """Run single-key upsert commands (``EVALSHA`` of ``script``) key by key, following the cluster."""
        return self.drive(_follow(self.topology, slots, commands, replicas=False,
                                  prologue=_pack(b"SCRIPT", b"LOAD", script), deadline=deadline))

    def masters(self) -> list[Address]:
        self.ensure_map()
        top = self.topology
        return [top.nodes[i] for i in np.unique(top.master[top.master >= 0]).tolist()]

    def close(self) -> None:
        for client in self._sync.values():
            client.close()
        for aio in self._aio.values():
            if aio is not None:
                aio.close()
        self._threads.shutdown(wait=False)


def _ignore_failure(task: asyncio.Future) -> None:
    """A background refresh that failed: the next error refreshes again (read the result so asyncio
    does not log it as never retrieved)."""
    if not task.cancelled():
        task.exception()


def _readonly_on_connect(conn) -> None:
    """redis-py's connect hook for replica connections: the usual handshake, then ``READONLY``."""
    conn.on_connect()
    conn.send_command("READONLY")
    reply = conn.read_response()
    if _text(reply) != "OK":
        raise ConnectionError(f"the replica answered READONLY with {reply!r}")
