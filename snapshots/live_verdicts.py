"""Saved-vs-live verdicts of a snapshot, one state per snapshot per web process (issue 16, 3).

The snapshot-vs-live page polls a page of rows every second; at 50K PVs a full compare per
poll per open page is what made it unusable. Instead:

1. The first request for a snapshot builds its ``VerdictState``: the saved rows (one query,
   in natural name order, with the PVs' current tolerances), the cached entries of their
   addresses (one HMGET) and the monitor's liveness; then each row's verdict. Requests for the
   same snapshot that arrive meanwhile answer phase ``comparing`` at once (after
   ``WAIT_SECONDS``) rather than starting a second computation.
2. One listener thread per process follows the monitor's update stream
   (``events.updates_channel``) and applies each batch to every state: only the rows whose
   addresses changed are judged again. It subscribes before a state reads the cache, and
   batches that arrive while a state is being built are applied after it, an older entry
   never replacing a newer one (``updated_at``).
3. Verdicts use the one tolerance rule (``snapshots.tolerance.within_tolerance``, on the sides
   ``snapshots.codec`` decodes, as the compare does) and the one liveness rule
   (``monitor.cache.Liveness``): an address whose shard has no live heartbeat has *no live
   value*, whatever its cached entry says. Liveness is re-read every ``LIVENESS_SECONDS``;
   when the set of live shards changes every row is judged again from the entries held.
4. A poll of a ready state queries nothing: the snapshot's existence and title are checked
   again only every ``EXISTS_SECONDS``. A state nobody asked for in ``IDLE_SECONDS`` is
   dropped (the listener stops with the last one); one older than ``REFRESH_SECONDS``, or
   whose listener lost Redis (updates missed), is rebuilt by the next request while the old
   one keeps answering.

A page (``VerdictState.page``) filters by text, tags and verdict; filtered index lists are
kept per filter until a verdict changes, so an unchanged page costs a slice and a hash
(``Page.etag``), and the view answers 304.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import redis
from django.db import connection
from django.db.models import TextField
from django.db.models.functions import Cast

from monitor import cache, events
from monitor.values import Entry
from pvs.models import PV
from snapshots.codec import (
    KIND_FLOAT,
    META_JOIN,
    RawSide,
    absent_sql,
    select_raw,
    side_from_columns,
    side_value,
)
from snapshots.codec import side_from_entry as _live_side
from snapshots.tolerance import within_tolerance
from squirrel.perf import gc_paused

log = logging.getLogger(__name__)

EQUAL = "equal"
OUT = "out-of-tolerance"
DISCONNECTED = "disconnected"
NO_LIVE = "no-live-value"
VERDICTS = (EQUAL, OUT, DISCONNECTED, NO_LIVE)
COMPARING = "comparing"
READY = "ready"

WAIT_SECONDS = 0.2  # how long a request waits for another's build before answering comparing
IDLE_SECONDS = 60.0
REFRESH_SECONDS = 60.0
LIVENESS_SECONDS = 1.0
EXISTS_SECONDS = 5.0  # how long a poll trusts that the snapshot still exists (no query)
_FILTER_CACHE = 32  # filtered index lists kept per state
_TAG_SECONDS = 5.0  # how long a tag filter's PV ids are reused


class Live(NamedTuple):
    """One address's cached entry as the page needs it: ``value`` as shown (an enum's label,
    None while disconnected), ``comparable`` as the tolerance rule takes it
    (``codec.side_from_entry``)."""

    value: Any
    comparable: Any
    connected: bool
    severity: int | None
    timestamp: float | None
    units: str | None
    precision: int | None
    updated_at: float


_make_live = Live._make


def live_from_entry(entry: Entry) -> Live:
    get = entry.get
    updated = get("updated_at")
    updated = updated if isinstance(updated, int | float) else 0.0
    value = get("value")
    connected = bool(get("connected"))
    meta = (get("severity"), get("timestamp"), get("units"), get("precision"), updated)
    if type(value) is float and value - value == 0.0 and connected:  # most PVs: no decoding
        return _make_live((value, value, True, *meta))
    side = _live_side(entry)
    assert side is not None  # None only for a missing entry
    shown = side.label if side.label is not None else side.wire
    return _make_live((shown, side.comparable, connected, *meta))


def _saved(raw: RawSide) -> tuple[Any, Any]:
    """(value as shown, comparable) of a stored side: ``codec`` decodes it, except a plain
    float, which is its own comparable (``side_from_columns``'s answer, without the call)."""
    kind, num, text, array = raw[0], raw[1], raw[2], raw[3]
    if kind == KIND_FLOAT and raw[6] is None:
        return num, num
    side = side_from_columns(*raw)
    return side_value(kind, num, text, array), side.comparable if side is not None else None


class SavedRow:
    """One PV of the snapshot: its saved sides (shown and comparable), its tolerances, its
    verdict now."""

    __slots__ = (
        "index", "pv_id", "pv_name", "sp_address", "rb_address", "abs_tol", "rel_tol",
        "sp_present", "sp_value", "sp_cmp", "rb_present", "rb_value", "rb_cmp", "sp_units",
        "rb_units", "precision", "verdict", "version",
    )  # fmt: skip

    def __init__(self, index: int, r: tuple[Any, ...]) -> None:
        self.index = index
        self.pv_id: str | None = r[0]
        self.pv_name: str = r[1]
        self.sp_address: str | None = r[2]
        self.rb_address: str | None = r[3]
        self.abs_tol: float = r[4]
        self.rel_tol: float = r[5]
        self.sp_present = not r[20]
        self.sp_value: Any
        self.sp_cmp: Any
        self.sp_value, self.sp_cmp = _saved(r[6:13]) if self.sp_present else (None, None)
        self.rb_present = not r[21]
        self.rb_value: Any
        self.rb_cmp: Any
        self.rb_value, self.rb_cmp = _saved(r[13:20]) if self.rb_present else (None, None)
        self.sp_units: str | None = r[22]
        self.rb_units: str | None = r[24]
        self.precision: int | None = r[23] if r[23] is not None else r[25]
        self.verdict = NO_LIVE
        self.version = 0

    def haystack(self) -> str:
        """What ``q`` searches: the name and addresses, case-folded."""
        names = (self.pv_name, self.sp_address, self.rb_address)
        return "\n".join(a for a in names if a).casefold()


def _natural_key(raw: list[tuple[Any, ...]]) -> Callable[[tuple[Any, ...]], tuple[int, str]]:
    """Sort key of ``_ROWS_SQL`` rows: their PV's place in the PV browser's natural order
    (``PVQuerySet.natural_order``: an index walk, where sorting the snapshot's 50K names in
    the ICU collation costs PostgreSQL 0.2 s), then the name; rows whose PV is gone last."""
    ids = PV.objects.natural_order().annotate(text_id=Cast("id", TextField()))
    rank = {pv_id: i for i, pv_id in enumerate(ids.values_list("text_id", flat=True))}
    last = len(rank)
    return lambda r: (rank.get(r[0], last), r[1])


_ROWS_SQL = (
    "SELECT sv.pv_id::text, sv.pv_name, sv.setpoint_address, sv.readback_address,"
    " COALESCE(pv.abs_tolerance, 0), COALESCE(pv.rel_tolerance, 0), "
    + ", ".join([select_raw("sp"), select_raw("rb"), absent_sql("sp"), absent_sql("rb")])
    + ", spm.units, spm.precision, rbm.units, rbm.precision"
    " FROM snapshot_value sv LEFT JOIN pv ON pv.id = sv.pv_id"
    + META_JOIN
    + " WHERE sv.snapshot_id = %s"
)
"""Row (in no order: ``_natural_key`` orders them): pv_id, pv_name, the snapshot's addresses,
tolerances (0/0 when the PV is gone), the setpoint and readback sides (``codec.RAW_SIDE``
each), whether each is absent, then units and precision of each side's stored metadata.
``SavedRow`` indexes it."""


def _judge(row: SavedRow, lives: dict[str, Live], current: Callable[[str], bool]) -> str:
    """A row's verdict from the live entries held: any address disconnected, then any with no
    current entry (liveness rule), then the tolerance rule on each side."""
    verdict = EQUAL
    for address, saved in ((row.sp_address, row.sp_cmp), (row.rb_address, row.rb_cmp)):
        if not address:
            continue
        live = lives.get(address)
        if live is None or not current(address):
            if verdict in (EQUAL, OUT):
                verdict = NO_LIVE
            continue
        if not live.connected:
            return DISCONNECTED
        if verdict == EQUAL and not within_tolerance(
            saved,
            live.comparable,
            abs_tol=row.abs_tol,
            rel_tol=row.rel_tol,
        ):
            verdict = OUT
    return verdict


@dataclass
class Page:
    """One page of a state's rows, with what its ETag is made of."""

    phase: str
    rows: list[SavedRow]
    lives: dict[str, Live]
    matched: int
    counts: dict[str, int] | None
    monitor_alive: bool
    etag: str


@dataclass(frozen=True)
class PageQuery:
    offset: int = 0
    limit: int = 100
    q: str = ""
    only_out: bool = False
    tags: tuple[str, ...] = ()


@dataclass(eq=False)  # compared and hashed by identity (kept in sets)
class VerdictState:
    """The verdicts of one snapshot in this process (module docstring)."""

    snapshot_id: str
    title: str = ""
    checked_at: float = -math.inf  # when the snapshot was last seen to exist
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    phase: str = COMPARING
    rows: list[SavedRow] = field(default_factory=list)
    by_address: dict[str, list[SavedRow]] = field(default_factory=dict)
    lives: dict[str, Live] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    shards_alive: tuple[bool, ...] = ()
    current: Callable[[str], bool] = lambda address: False
    version: int = 0  # bumped by every change of a live entry held
    verdict_version: int = 0  # bumped by every change of a verdict
    built_at: float = 0.0
    used_at: float = field(default_factory=time.monotonic)
    pending: list[dict[str, Live]] = field(default_factory=list)  # batches during the build
    ready: threading.Event = field(default_factory=threading.Event)
    lock: threading.RLock = field(default_factory=threading.RLock)
    filters: dict[tuple[Any, ...], tuple[int, list[int]]] = field(default_factory=dict)
    tag_ids: dict[tuple[str, ...], tuple[float, frozenset[str]]] = field(default_factory=dict)
    rebuilding: bool = False
    haystacks: list[str] | None = None

    # -- building -------------------------------------------------------------------------
    @gc_paused()
    def build(self) -> None:
        """Read the saved rows, the cache and the liveness, and judge every row."""
        with connection.cursor() as cursor:
            cursor.execute(_ROWS_SQL, [self.snapshot_id])
            raw = cursor.fetchall()
        raw.sort(key=_natural_key(raw))
        rows = [SavedRow(i, r) for i, r in enumerate(raw)]
        by_address: dict[str, list[SavedRow]] = {}
        for row in rows:
            for address in (row.sp_address, row.rb_address):
                if address:
                    by_address.setdefault(address, []).append(row)
        liveness = cache.liveness_read()
        entries = cache.values_read(by_address)
        lives = {address: live_from_entry(entry) for address, entry in entries.items()}
        with self.lock:
            self.rows, self.by_address, self.lives = rows, by_address, lives
            self._liveness(liveness)
            for row in rows:
                row.verdict = _judge(row, lives, self.current)
                self.counts[row.verdict] += 1
            self.phase = READY
            pending, self.pending = self.pending, []
            for batch in pending:
                self.apply(batch)
            self.built_at = time.monotonic()
        self.ready.set()

    def _liveness(self, liveness: cache.Liveness) -> bool:
        """Adopt a liveness reading; True when the set of live shards changed."""
        alive = tuple(liveness.shard_alive(s) for s in range(liveness.shards))
        changed = alive != self.shards_alive
        self.shards_alive = alive
        if all(alive):
            self.current = _always
        elif not any(alive):
            self.current = _never
        else:
            self.current = liveness.current
        return changed

    # -- keeping up -------------------------------------------------------------------------
    def apply(self, updates: dict[str, Live]) -> None:
        """One batch of the update stream (``live_from_entry`` of each entry, converted once
        for every state): re-judge the rows whose addresses changed."""
        if self.phase != READY:
            self.pending.append(updates)
            return
        by_address, lives, current = self.by_address, self.lives, self.current
        touched: list[SavedRow] = []
        for address, live in updates.items():
            rows = by_address.get(address)
            if rows is None:
                continue
            old = lives.get(address)
            if old is not None and old.updated_at > live.updated_at:
                continue  # a batch older than what the cache gave the build
            lives[address] = live
            touched.extend(rows)
        if not touched:
            return
        self.version += 1
        for row in touched:
            row.version = self.version
            self._rejudge(row, current)

    def _rejudge(self, row: SavedRow, current: Callable[[str], bool]) -> None:
        verdict = _judge(row, self.lives, current)
        if verdict != row.verdict:
            self.counts[row.verdict] -= 1
            self.counts[verdict] += 1
            row.verdict = verdict
            self.verdict_version += 1

    def liveness_changed(self, liveness: cache.Liveness) -> None:
        """A new liveness reading: when live shards changed, judge every row again."""
        if self.phase != READY or not self._liveness(liveness):
            return
        self.version += 1
        for row in self.rows:
            row.version = self.version
            self._rejudge(row, self.current)

    # -- reading ----------------------------------------------------------------------------
    def _matching(self, query: PageQuery, tagged: frozenset[str] | None) -> list[int]:
        key = (query.q.casefold(), query.only_out, query.tags)
        version = self.verdict_version if query.only_out else -1
        cached = self.filters.get(key)
        if cached is not None and cached[0] == version and not query.tags:
            return cached[1]
        rows: Iterable[SavedRow] = self.rows
        needle = key[0]
        if needle:
            if self.haystacks is None:  # built on the first search, not with the state
                self.haystacks = [r.haystack() for r in self.rows]
            hay = self.haystacks
            rows = (r for r in rows if needle in hay[r.index])
        if tagged is not None:
            rows = (r for r in rows if r.pv_id is not None and r.pv_id in tagged)
        if query.only_out:
            rows = (r for r in rows if r.verdict == OUT)
        found = [r.index for r in rows]
        if len(self.filters) >= _FILTER_CACHE:
            self.filters.clear()
        self.filters[key] = (version, found)
        return found

    def page(self, query: PageQuery, tagged: frozenset[str] | None) -> Page:
        """One page of rows matching ``query`` (``tagged``: PV ids of its tags)."""
        with self.lock:
            self.used_at = time.monotonic()
            if self.phase != READY:
                etag = _etag((self.uid, COMPARING, query))
                return Page(COMPARING, [], {}, 0, None, False, etag)
            found = self._matching(query, tagged)
            chosen = [self.rows[i] for i in found[query.offset : query.offset + query.limit]]
            lives = {
                a: self.lives[a]
                for r in chosen
                for a in (r.sp_address, r.rb_address)
                if a and a in self.lives
            }
            counts = dict(self.counts)
            alive = any(self.shards_alive)
            key = (
                self.uid,
                query,
                alive,
                len(found),
                tuple(counts.values()),
                tuple((r.index, r.version, r.verdict) for r in chosen),
            )
            return Page(READY, chosen, lives, len(found), counts, alive, _etag(key))


def _always(address: str) -> bool:
    return True


def _never(address: str) -> bool:
    return False


def _etag(key: Any) -> str:
    return '"' + hashlib.blake2b(repr(key).encode(), digest_size=12).hexdigest() + '"'


# --- the registry and its listener -----------------------------------------------------------

_lock = threading.Lock()
_states: dict[str, VerdictState] = {}
_building: set[VerdictState] = set()  # fresh states being rebuilt beside their old one
_listener: _Listener | None = None


class _Listener:
    """The process's follower of the update stream (module docstring, 2 and 3)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.subscribed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="live-verdicts", daemon=True)
        self.batches = 0
        self.thread.start()

    def _run(self) -> None:
        checked = 0.0
        first = True
        while not self.stop.is_set():
            pubsub = None
            try:
                pubsub = events.sync_redis().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(events.updates_channel())
                if not first:
                    _all_stale()  # updates may have been missed while away
                first = False
                self.subscribed.set()
                while not self.stop.is_set():
                    message = pubsub.get_message(timeout=0.25)
                    if message is not None and message.get("type") == "message":
                        self.batches += 1
                        _apply(msgpack.unpackb(message["data"], raw=False).get("u", {}))
                    if time.monotonic() - checked >= LIVENESS_SECONDS:
                        checked = time.monotonic()
                        if _housekeeping():
                            return
            except Exception as exc:  # Redis away: retry; the states rebuild on next use
                log.warning("live verdicts lost the update stream (%s); retrying in 1 s", exc)
                self.subscribed.clear()
                self.stop.wait(1.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # closing a broken connection
                        pubsub.close()


def _apply(entries: dict[str, Entry]) -> None:
    with _lock:
        states = [*_states.values(), *_building]
    if not states:
        return
    updates = {address: live_from_entry(entry) for address, entry in entries.items()}
    for state in states:
        with state.lock:
            state.apply(updates)


def _all_stale() -> None:
    with _lock:
        for state in _states.values():
            state.built_at = -math.inf


def _housekeeping() -> bool:
    """Drop idle states, re-read liveness; True when the listener should stop (no states)."""
    global _listener
    now = time.monotonic()
    with _lock:
        for key, state in list(_states.items()):
            if now - state.used_at > IDLE_SECONDS:
                del _states[key]
        if not _states:
            _listener = None
            return True
        states = list(_states.values())
    liveness = cache.liveness_read()
    for state in states:
        with state.lock:
            state.liveness_changed(liveness)
    return False


def _ensure_listener() -> None:
    """Start the listener if needed and wait until it is subscribed (module docstring, 2)."""
    global _listener
    with _lock:
        if _listener is None or not _listener.thread.is_alive():
            _listener = _Listener()
        listener = _listener
    if not listener.subscribed.wait(2.0):
        raise redis.ConnectionError("could not subscribe to the update stream")


def state_checked(*, snapshot_id: str) -> VerdictState | None:
    """The ready, fresh state of ``snapshot_id`` if its snapshot was seen to exist within
    ``EXISTS_SECONDS`` (then a poll costs no query), else None: ask ``verdict_state``."""
    with _lock:
        state = _states.get(snapshot_id)
    now = time.monotonic()
    if (
        state is None
        or state.phase != READY
        or now - state.checked_at > EXISTS_SECONDS
        or now - state.built_at > REFRESH_SECONDS
    ):
        return None
    return state


def verdict_state(*, snapshot_id: str, title: str = "") -> VerdictState:
    """This process's state of ``snapshot_id`` (which the caller has just seen to exist, with
    ``title``), built now by the first caller (and rebuilt when stale) while other callers
    get the one being built (phase ``comparing``)."""
    key = str(snapshot_id)
    with _lock:
        state = _states.get(key)
        if state is not None:
            state.title, state.checked_at = title, time.monotonic()
        build = state is None or (
            state.phase == READY
            and not state.rebuilding
            and time.monotonic() - state.built_at > REFRESH_SECONDS
        )
        if state is not None and build:
            state.rebuilding = True
        if state is None:
            state = _states[key] = VerdictState(
                snapshot_id=key, title=title, checked_at=time.monotonic()
            )
    if not build:
        state.ready.wait(WAIT_SECONDS)
        return state
    fresh = state
    if state.phase == READY:
        fresh = VerdictState(snapshot_id=key, title=title, checked_at=state.checked_at)
    try:
        _ensure_listener()
        if fresh is not state:
            with _lock:  # follow the stream from now on, before reading the cache
                _building.add(fresh)
        fresh.build()
    except BaseException:
        with _lock:
            _building.discard(fresh)
            if _states.get(key) is state and state.phase != READY:
                del _states[key]
            state.rebuilding = False
        raise
    with _lock:
        _building.discard(fresh)
        fresh.used_at = state.used_at
        _states[key] = fresh
    return fresh


def tagged_pv_ids(state: VerdictState, tag_ids: Sequence[str]) -> frozenset[str] | None:
    """PV ids carrying any of ``tag_ids`` (None without a tag filter), reused for a few s."""
    if not tag_ids:
        return None
    key = tuple(sorted(tag_ids))
    hit = state.tag_ids.get(key)
    if hit is not None and time.monotonic() - hit[0] < _TAG_SECONDS:
        return hit[1]
    ids = frozenset(str(p) for p in PV.objects.with_any_tag(list(key)).values_list("id", flat=True))
    state.tag_ids[key] = (time.monotonic(), ids)
    return ids


def verdicts_reset() -> None:
    """Forget every state and stop the listener (tests; a process that forks)."""
    global _listener
    with _lock:
        _states.clear()
        _building.clear()
        listener, _listener = _listener, None
    if listener is not None:
        listener.stop.set()
        listener.thread.join(5)
