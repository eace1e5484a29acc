"""The gateway's shared state: cache entries, the semantic index's log, spend, budget reservations, rate windows.

Two implementations of one interface:
- `SQLiteState` (the embedded default, `sqlite:///PATH`): one file in WAL mode; every check-and-update runs in a
  `BEGIN IMMEDIATE` transaction, so limits hold across threads and across gateway processes on one machine.
- `RedisState` (`redis://HOST:PORT/DB`): for several gateway instances; every check-and-update is one Lua script,
  which Redis runs atomically.

Rate limits are sliding-window logs over 60 s (exact: a key with `rpm: 10` never gets an 11th request inside any
60 s window), charged at admission with the request's token estimate (prompt + max_tokens, as OpenAI counts them)
and corrected to the real count when the answer arrives. Budgets are checked against spend plus the reservations
of requests in flight, each reservation the request's most expensive outcome (its prompt and max_tokens at the
priciest back end it may reach), settled to the real cost when it ends; a reservation whose request never settles
(a crashed gateway) expires after `RESERVATION_TTL` seconds.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

WINDOW = 60.0  # seconds of the rpm/tpm windows
RESERVATION_TTL = 900.0  # seconds before an unsettled budget reservation stops counting


@dataclass
class SemanticEntry:
    seq: int
    entry_id: str
    vector: bytes
    text: str
    expires: float


@dataclass
class Admission:
    ok: bool
    retry_after: float = 0.0
    reason: str = ""
    ticket: str = ""


class State(ABC):
    """What the caches, the ledger and the limiter keep, wherever it lives."""

    # -- exact cache
    @abstractmethod
    async def cache_get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def cache_put(self, key: str, value: bytes, ttl: float, max_entries: int) -> None: ...

    # -- semantic index: an append-only log per scope that each instance mirrors in memory
    @abstractmethod
    async def sem_add(self, scope: str, entry_id: str, vector: bytes, text: str, ttl: float,
                      max_entries: int) -> None: ...

    @abstractmethod
    async def sem_since(self, scope: str, cursor: int) -> list[SemanticEntry]: ...

    # -- spend
    @abstractmethod
    async def spend_add(self, key: str, team: str, model: str, cost: float, prompt_tokens: int,
                        completion_tokens: int) -> None: ...

    @abstractmethod
    async def spend_rows(self) -> list[dict]: ...

    # -- budgets: scopes are "key:NAME" / "team:NAME"
    @abstractmethod
    async def reserve(self, budgets: dict[str, float], amount: float) -> Admission: ...

    @abstractmethod
    async def settle(self, ticket: str, budgets: dict[str, float], cost: float) -> None: ...

    @abstractmethod
    async def spent(self, scope: str) -> float: ...

    # -- rate limits
    @abstractmethod
    async def admit(self, key: str, rpm: int | None, tpm: int | None, tokens: int) -> Admission: ...

    @abstractmethod
    async def correct_tokens(self, key: str, ticket: str, tokens: int) -> None: ...

    async def close(self) -> None:
        return None


def open_state(uri: str | None) -> State:
    """`sqlite:///PATH` (default ~/.cache/temper/gateway.db), `redis://...`, or `memory`."""
    if uri is None:
        uri = "sqlite:///" + str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "temper" /
                                  "gateway.db")
    if uri == "memory":
        return SQLiteState(":memory:")
    if uri.startswith("sqlite:///"):
        return SQLiteState(uri.removeprefix("sqlite:///"))
    if uri.startswith(("redis://", "rediss://", "unix://")):
        return RedisState(uri)
    raise ValueError(f"state store {uri!r}: use sqlite:///PATH, redis://HOST:PORT/DB or memory")


# ====================================================================== SQLite
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL,
                                  used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS cache_used ON cache (used);
CREATE TABLE IF NOT EXISTS sem (seq INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, entry_id TEXT NOT NULL,
                                vector BLOB NOT NULL, text TEXT NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sem_scope ON sem (scope, seq);
CREATE TABLE IF NOT EXISTS spend (key TEXT NOT NULL, team TEXT NOT NULL, model TEXT NOT NULL,
                                  cost REAL NOT NULL DEFAULT 0, requests INTEGER NOT NULL DEFAULT 0,
                                  prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
                                  PRIMARY KEY (key, team, model));
CREATE TABLE IF NOT EXISTS budget (scope TEXT PRIMARY KEY, spent REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS reservation (ticket TEXT NOT NULL, scope TEXT NOT NULL, amount REAL NOT NULL,
                                        expires REAL NOT NULL, PRIMARY KEY (ticket, scope));
CREATE TABLE IF NOT EXISTS rate (key TEXT NOT NULL, ticket TEXT NOT NULL, ts REAL NOT NULL, tokens INTEGER NOT NULL,
                                 PRIMARY KEY (key, ticket));
CREATE INDEX IF NOT EXISTS rate_ts ON rate (key, ts);
"""


class SQLiteState(State):
    def __init__(self, path: str):
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            path = str(Path(path).expanduser())
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._lock = threading.Lock()  # one connection, used from the event loop and from tests' threads
        self._cache_counts: dict[str, int] = {}  # cache entries per key prefix, counted since the last prune
        with self._lock:
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def _txn(self, fn):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    async def cache_get(self, key: str) -> bytes | None:
        # one statement each, so no explicit transaction: a miss (the common case) is a single indexed read
        now = time.time()
        with self._lock:
            row = self._db.execute("SELECT value, expires FROM cache WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            if row[1] <= now:
                self._db.execute("DELETE FROM cache WHERE key = ? AND expires <= ?", (key, now))
                return None
            self._db.execute("UPDATE cache SET used = ? WHERE key = ?", (now, key))
            return row[0]

    async def cache_put(self, key: str, value: bytes, ttl: float, max_entries: int) -> None:
        """Store one answer; keep each kind of entry ("x:" exact, "s:" semantic) within its `max_entries`.

        The size check is amortized: this instance counts its own inserts from the last exact count, and only when
        that count passes the limit does it prune (expired entries first, then the least recently used) down to
        `max_entries - max_entries // 16`, so the next sixteenth of the limit's inserts cost one statement each.
        Several gateway processes sharing the file each prune by their own count, so the table can run over the
        limit by what the others inserted since, until one of them prunes."""
        now = time.time()
        prefix = key[:2]
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)", (key, value, now + ttl, now))
            count = self._cache_counts.get(prefix)
            if count is not None and count + 1 <= max_entries:
                self._cache_counts[prefix] = count + 1
                return
        self._cache_counts[prefix] = self._txn(lambda db: _prune_cache(db, prefix, now, max_entries))

    async def sem_add(self, scope, entry_id, vector, text, ttl, max_entries) -> None:
        now = time.time()

        def run(db):
            db.execute("INSERT INTO sem (scope, entry_id, vector, text, expires) VALUES (?, ?, ?, ?, ?)",
                       (scope, entry_id, vector, text, now + ttl))
            db.execute("DELETE FROM sem WHERE scope = ? AND seq NOT IN (SELECT seq FROM sem WHERE scope = ? "
                       "ORDER BY seq DESC LIMIT ?)", (scope, scope, max_entries))
        self._txn(run)

    async def sem_since(self, scope, cursor) -> list[SemanticEntry]:
        with self._lock:
            rows = self._db.execute("SELECT seq, entry_id, vector, text, expires FROM sem WHERE scope = ? AND seq > ? "
                                    "ORDER BY seq", (scope, cursor)).fetchall()
        return [SemanticEntry(*r) for r in rows]

    async def spend_add(self, key, team, model, cost, prompt_tokens, completion_tokens) -> None:
        with self._lock:  # one upsert statement: atomic on its own
            self._db.execute(
            "INSERT INTO spend VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (key, team, model) DO UPDATE SET "
            "cost = cost + excluded.cost, requests = requests + 1, prompt_tokens = prompt_tokens + "
            "excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens",
            (key, team, model, cost, prompt_tokens, completion_tokens))

    async def spend_rows(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT key, team, model, cost, requests, prompt_tokens, completion_tokens "
                                    "FROM spend ORDER BY key, model").fetchall()
        cols = ("key", "team", "model", "cost_usd", "requests", "prompt_tokens", "completion_tokens")
        return [dict(zip(cols, r)) for r in rows]

    async def reserve(self, budgets, amount) -> Admission:
        now = time.time()
        ticket = uuid.uuid4().hex

        def run(db):
            db.execute("DELETE FROM reservation WHERE expires <= ?", (now,))
            for scope, limit in budgets.items():
                spent = _scalar(db, "SELECT spent FROM budget WHERE scope = ?", scope)
                held = _scalar(db, "SELECT SUM(amount) FROM reservation WHERE scope = ?", scope)
                if spent + held + amount > limit + 1e-12:
                    return Admission(False, reason=_budget_reason(scope, limit, spent, held, amount))
            for scope in budgets:
                db.execute("INSERT INTO reservation VALUES (?, ?, ?, ?)", (ticket, scope, amount,
                                                                          now + RESERVATION_TTL))
            return Admission(True, ticket=ticket)
        return self._txn(run)

    async def settle(self, ticket, budgets, cost) -> None:
        def run(db):
            db.execute("DELETE FROM reservation WHERE ticket = ?", (ticket,))
            for scope in budgets:
                db.execute("INSERT INTO budget VALUES (?, ?) ON CONFLICT (scope) DO UPDATE SET spent = spent + "
                           "excluded.spent", (scope, cost))
        self._txn(run)

    async def spent(self, scope) -> float:
        with self._lock:
            return _scalar(self._db, "SELECT spent FROM budget WHERE scope = ?", scope)

    async def admit(self, key, rpm, tpm, tokens) -> Admission:
        now = time.time()
        ticket = uuid.uuid4().hex

        def run(db):
            db.execute("DELETE FROM rate WHERE key = ? AND ts <= ?", (key, now - WINDOW))
            rows = db.execute("SELECT ts, tokens FROM rate WHERE key = ? ORDER BY ts", (key,)).fetchall()
            verdict = _window_verdict(rows, now, rpm, tpm, tokens)
            if verdict.ok:
                db.execute("INSERT INTO rate VALUES (?, ?, ?, ?)", (key, ticket, now, tokens))
                verdict.ticket = ticket
            return verdict
        return self._txn(run)

    async def correct_tokens(self, key, ticket, tokens) -> None:
        self._txn(lambda db: db.execute("UPDATE rate SET tokens = ? WHERE key = ? AND ticket = ?",
                                        (tokens, key, ticket)))

    async def close(self) -> None:
        with self._lock:
            self._db.close()


def _prune_cache(db, prefix: str, now: float, max_entries: int) -> int:
    """Delete expired entries of one kind, then the least recently used down to the low-water mark; the count left."""
    lo, hi = prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)  # the keys that start with `prefix`
    db.execute("DELETE FROM cache WHERE key >= ? AND key < ? AND expires <= ?", (lo, hi, now))
    (count,) = db.execute("SELECT COUNT(*) FROM cache WHERE key >= ? AND key < ?", (lo, hi)).fetchone()
    if count > max_entries:
        keep = max_entries - max_entries // 16
        db.execute("DELETE FROM cache WHERE key IN (SELECT key FROM cache WHERE key >= ? AND key < ? "
                   "ORDER BY used LIMIT ?)", (lo, hi, count - keep))
        count = keep
    return count


def _scalar(db, sql: str, *args) -> float:
    row = db.execute(sql, args).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def _budget_reason(scope: str, limit: float, spent: float, held: float, amount: float) -> str:
    kind, name = scope.split(":", 1)
    return (f"the {kind} {name!r} has spent ${spent:.6f} of its ${limit:.6f} budget (${held:.6f} more held by "
            f"requests in flight); this request may cost up to ${amount:.6f}")


def _window_verdict(rows: list[tuple[float, int]], now: float, rpm: int | None, tpm: int | None,
                    tokens: int) -> Admission:
    """Admit one request of `tokens` against a 60 s log of (ts, tokens), oldest first; else say when it would fit."""
    if tpm is not None and tokens > tpm:
        return Admission(False, retry_after=0.0, reason=f"this request counts {tokens} tokens (prompt estimate + "
                                                        f"max_tokens), more than the key's limit of {tpm} tokens per minute")
    waits = []
    if rpm is not None and len(rows) + 1 > rpm:
        waits.append((rows[len(rows) - rpm][0] + WINDOW - now, f"{rpm} requests per minute"))
    if tpm is not None:
        total = sum(t for _, t in rows)
        if total + tokens > tpm:
            freed = 0
            for ts, t in rows:
                freed += t
                if total - freed + tokens <= tpm:
                    waits.append((ts + WINDOW - now, f"{tpm} tokens per minute"))
                    break
    if not waits:
        return Admission(True)
    wait, limit = max(waits)
    return Admission(False, retry_after=max(wait, 0.001), reason=f"rate limit of {limit} reached")


# ====================================================================== Redis
_LUA_ADMIT = """
local key, now, window, rpm, tpm, tokens, ticket = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local rows = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local n = #rows / 2
local toks = {}
local total = 0
for i = 1, n do
  local t = tonumber(redis.call('HGET', key .. ':tokens', rows[2 * i - 1]) or '0')
  toks[i] = t
  total = total + t
end
if tpm >= 0 and tokens > tpm then return {0, '0', 'tokens'} end
local wait = -1
local why = ''
if rpm >= 0 and n + 1 > rpm then
  wait = tonumber(rows[2 * (n - rpm + 1)]) + window - now
  why = 'rpm'
end
if tpm >= 0 and total + tokens > tpm then
  local freed = 0
  for i = 1, n do
    freed = freed + toks[i]
    if total - freed + tokens <= tpm then
      local w = tonumber(rows[2 * i]) + window - now
      if w > wait then wait = w; why = 'tpm' end
      break
    end
  end
end
if wait >= 0 then return {0, tostring(wait), why} end
redis.call('ZADD', key, ARGV[1], ticket)
redis.call('HSET', key .. ':tokens', ticket, tokens)
redis.call('PEXPIRE', key, math.ceil(window * 1000) + 1000)
-- drop token counts of tickets that left the window
local alive = redis.call('HKEYS', key .. ':tokens')
for _, t in ipairs(alive) do
  if not redis.call('ZSCORE', key, t) then redis.call('HDEL', key .. ':tokens', t) end
end
redis.call('PEXPIRE', key .. ':tokens', math.ceil(window * 1000) + 1000)
return {1, '0', ''}
"""

_LUA_RESERVE = """
-- KEYS: budget hashes (spent), ARGV: now, ttl, amount, ticket, then one limit per key
local now, ttl, amount, ticket = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for i, key in ipairs(KEYS) do
  local resv = key .. ':resv'
  local expired = redis.call('ZRANGEBYSCORE', resv, '-inf', now)
  for _, t in ipairs(expired) do redis.call('HDEL', resv .. ':amount', t) end
  redis.call('ZREMRANGEBYSCORE', resv, '-inf', now)
  local held = 0
  for _, a in ipairs(redis.call('HVALS', resv .. ':amount')) do held = held + tonumber(a) end
  local spent = tonumber(redis.call('HGET', key, 'spent') or '0')
  if spent + held + amount > tonumber(ARGV[4 + i]) + 1e-12 then
    return {0, i, tostring(spent), tostring(held)}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key .. ':resv', now + ttl, ticket)
  redis.call('HSET', key .. ':resv:amount', ticket, amount)
end
return {1, 0, '0', '0'}
"""

_LUA_SETTLE = """
local ticket, cost = ARGV[1], ARGV[2]
for _, key in ipairs(KEYS) do
  redis.call('ZREM', key .. ':resv', ticket)
  redis.call('HDEL', key .. ':resv:amount', ticket)
  redis.call('HINCRBYFLOAT', key, 'spent', cost)
end
return 1
"""

_LUA_CACHE_PUT = """
local key, lru, value, ttl_ms, now, max = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
redis.call('SET', key, value, 'PX', ttl_ms)
redis.call('ZADD', lru, now, key)
local n = redis.call('ZCARD', lru)
if n > max then
  local old = redis.call('ZRANGE', lru, 0, n - max - 1)
  for _, k in ipairs(old) do redis.call('DEL', k) end
  redis.call('ZREMRANGEBYRANK', lru, 0, n - max - 1)
end
return 1
"""


class RedisState(State):
    """Shared state in Redis (redis-py's asyncio client); keys live under `temper:gw:`."""

    PREFIX = "temper:gw:"

    def __init__(self, uri: str):
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ValueError("a redis:// store needs the redis package: pip install 'temper[redis]'") from None
        self.uri = uri
        self._redis = aioredis.from_url(uri)
        self._scripts: dict[str, object] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _script(self, name: str, body: str):
        if name not in self._scripts:
            self._scripts[name] = self._redis.register_script(body)
        return self._scripts[name]

    def k(self, *parts: str) -> str:
        return self.PREFIX + ":".join(parts)

    async def ping(self) -> None:
        await self._redis.ping()

    async def cache_get(self, key):
        value = await self._redis.get(self.k("cache", key))
        if value is not None:
            await self._redis.zadd(self.k("cache-lru", key[:2]), {self.k("cache", key): time.time()})
        return value

    async def cache_put(self, key, value, ttl, max_entries):
        await self._script("cache_put", _LUA_CACHE_PUT)(
            keys=[self.k("cache", key), self.k("cache-lru", key[:2])],  # one LRU order per kind of entry
            args=[value, int(ttl * 1000), time.time(), max_entries])

    async def sem_add(self, scope, entry_id, vector, text, ttl, max_entries):
        await self._redis.xadd(self.k("sem", scope), {"id": entry_id, "v": vector, "t": text.encode(),
                                                      "e": str(time.time() + ttl)},
                               maxlen=max_entries, approximate=False)

    async def sem_since(self, scope, cursor):
        start = "-" if cursor <= 0 else f"({_stream_id(cursor)}"
        rows = await self._redis.xrange(self.k("sem", scope), min=start, max="+")
        out = []
        for sid, fields in rows:
            ms, n = (int(x) for x in sid.decode().split("-"))
            out.append(SemanticEntry(ms * 2**20 + n, fields[b"id"].decode(), fields[b"v"], fields[b"t"].decode(),
                                     float(fields[b"e"])))
        return out

    async def spend_add(self, key, team, model, cost, prompt_tokens, completion_tokens):
        h = self.k("spend", key, team, model)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrbyfloat(h, "cost", cost)
        pipe.hincrby(h, "requests", 1)
        pipe.hincrby(h, "prompt_tokens", prompt_tokens)
        pipe.hincrby(h, "completion_tokens", completion_tokens)
        pipe.sadd(self.k("spend-index"), f"{key}\0{team}\0{model}")
        await pipe.execute()

    async def spend_rows(self):
        rows = []
        for member in sorted(await self._redis.smembers(self.k("spend-index"))):
            key, team, model = member.decode().split("\0")
            h = await self._redis.hgetall(self.k("spend", key, team, model))
            rows.append({"key": key, "team": team, "model": model, "cost_usd": float(h.get(b"cost", 0)),
                         "requests": int(h.get(b"requests", 0)), "prompt_tokens": int(h.get(b"prompt_tokens", 0)),
                         "completion_tokens": int(h.get(b"completion_tokens", 0))})
        return rows

    async def reserve(self, budgets, amount):
        ticket = uuid.uuid4().hex
        scopes = list(budgets)
        ok, index, spent, held = await self._script("reserve", _LUA_RESERVE)(
            keys=[self.k("budget", s) for s in scopes],
            args=[time.time(), RESERVATION_TTL, amount, ticket, *[budgets[s] for s in scopes]])
        if ok:
            return Admission(True, ticket=ticket)
        scope = scopes[int(index) - 1]
        return Admission(False, reason=_budget_reason(scope, budgets[scope], float(spent), float(held), amount))

    async def settle(self, ticket, budgets, cost):
        await self._script("settle", _LUA_SETTLE)(keys=[self.k("budget", s) for s in budgets], args=[ticket, cost])

    async def spent(self, scope):
        value = await self._redis.hget(self.k("budget", scope), "spent")
        return float(value or 0)

    async def admit(self, key, rpm, tpm, tokens):
        ticket = uuid.uuid4().hex
        ok, wait, why = await self._script("admit", _LUA_ADMIT)(
            keys=[self.k("rate", key)],
            args=[time.time(), WINDOW, -1 if rpm is None else rpm, -1 if tpm is None else tpm, tokens, ticket])
        if ok:
            return Admission(True, ticket=ticket)
        why = why.decode() if isinstance(why, bytes) else why
        if why == "tokens":
            return _window_verdict([], 0, None, tpm, tokens)
        limit = f"{rpm} requests per minute" if why == "rpm" else f"{tpm} tokens per minute"
        return Admission(False, retry_after=max(float(wait), 0.001), reason=f"rate limit of {limit} reached")

    async def correct_tokens(self, key, ticket, tokens):
        h = self.k("rate", key) + ":tokens"
        if await self._redis.hexists(h, ticket):
            await self._redis.hset(h, ticket, tokens)

    async def close(self):
        await self._redis.aclose()


def _stream_id(seq: int) -> str:
    return f"{seq // 2**20}-{seq % 2**20}"
