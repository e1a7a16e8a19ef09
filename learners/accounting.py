"""Where every consumed event went, the buffers events wait in, and the dead letters already sent."""

from __future__ import annotations

import base64
import os
import re
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from learners.files import atomic_write


@dataclass
class Accounting:
    """Where every consumed event went, each in exactly one place:
    consumed == trained + held_out + quarantined + pending + pending_holdout + sum(dead_lettered).

    A duplicate id is dead-lettered (reason ``duplicate_id``) and counted there only.
    """

    consumed: int = 0
    trained: int = 0
    held_out: int = 0
    quarantined: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    published: int = 0


class EventBuffer:
    """Rows of raw feature values with labels, appended one at a time, bounded or not."""

    def __init__(self, n_features: int, limit: int | None = None):
        self.n_features, self.limit = n_features, limit
        self._x: list[tuple[float, ...]] = []
        self._y: list[int] = []

    def add(self, x: tuple[float, ...], y: int) -> None:
        if len(x) != self.n_features:  # a ragged buffer would fail the next round and checkpoint
            raise ValueError(f"a row of {len(x)} values cannot join a buffer of {self.n_features} features")
        self._x.append(x)
        self._y.append(y)
        if self.limit and len(self._y) > self.limit * 2:  # trim in bulk, not per event
            del self._x[: -self.limit], self._y[: -self.limit]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._x, self._y
        if self.limit:
            x, y = x[-self.limit :], y[-self.limit :]
        return np.asarray(x, np.float32).reshape(-1, self.n_features), np.asarray(y, np.int64)

    def load(self, x: np.ndarray, y: np.ndarray) -> None:
        self._x = [tuple(r) for r in x.tolist()]
        self._y = y.tolist()

    def clear(self) -> None:
        self._x, self._y = [], []

    def __len__(self) -> int:
        return min(len(self._y), self.limit) if self.limit else len(self._y)


class DeadLetterJournal:
    """The dead letters the broker acknowledged since the last checkpoint, one line each in a file
    beside it (written when acknowledged, so it survives the process being killed).

    After a crash the learner reads its events again from the checkpoint's offsets; a record named
    here, with the same bytes, is already in the dead-letter topic and is not sent again. A dead
    letter whose acknowledgement was not yet written when the process died can still be sent
    twice: its key (the source) tells the copies apart.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        try:
            lines = path.read_text(errors="replace").split()
        except FileNotFoundError:
            lines = []
        self.delivered = {line for line in lines if _ENTRY.fullmatch(line)}  # a line torn by a power cut is left out

    @staticmethod
    def entry(source: str, raw: bytes | None) -> str:
        """A dead letter: its source ``topic/partition/offset`` and a checksum of its bytes (a
        recreated topic reuses offsets for other records)."""
        return f"{source}@{'null' if raw is None else zlib.crc32(raw)}"

    def add(self, entry: str) -> None:
        """Record an acknowledged dead letter (called on the producer's thread)."""
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._fd, entry.encode() + b"\n")

    def checkpointed(self, offsets: dict[str, int]) -> None:
        """A checkpoint with these offsets ("topic:partition" -> next offset) is durable: forget
        what lies before them (never read again), keep what a replay has still to reach."""
        with self._lock:
            self.delivered = {e for e in self.delivered if _ahead_of(e, offsets)}
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self.delivered:
                atomic_write(self.path, "".join(f"{e}\n" for e in sorted(self.delivered)).encode())
            else:
                self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class DeadLetter:
    """What a dead letter is made of, kept until the broker has it."""

    raw: bytes | None
    key: bytes | None
    reason: str
    message: str
    source: tuple[str, int, int]

    def to_json(self) -> dict:
        enc = lambda b: None if b is None else base64.b64encode(b).decode()
        return {"raw": enc(self.raw), "key": enc(self.key), "reason": self.reason, "message": self.message, "source": list(self.source)}

    @classmethod
    def from_json(cls, doc: dict) -> DeadLetter:
        dec = lambda s: None if s is None else base64.b64decode(s)
        topic, partition, offset = doc["source"]
        return cls(dec(doc["raw"]), dec(doc["key"]), doc["reason"], doc["message"], (topic, int(partition), int(offset)))


class Undelivered:
    """Dead letters the producer or the broker refused (a dead-letter topic that a broker lost, a
    network cut longer than the producer's retries). They are sent again at every durable step
    until the broker has them, and written beside the checkpoint, so the offsets committed past
    their records lose none of them: not to a restart, not to a crash."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._letters: list[DeadLetter] = []
        try:
            self._letters = [DeadLetter.from_json(doc) for doc in orjson.loads(path.read_bytes())]
        except FileNotFoundError:
            pass

    def add(self, letter: DeadLetter) -> None:
        """Called on the producer's thread."""
        with self._lock:
            self._letters.append(letter)

    def take(self) -> list[DeadLetter]:
        """The letters to send again; one the broker refuses once more comes back through ``add``."""
        with self._lock:
            letters, self._letters = self._letters, []
        return letters

    def __len__(self) -> int:
        return len(self._letters)

    def checkpointed(self) -> None:
        """Write the letters still undelivered beside the checkpoint just written."""
        with self._lock:
            letters = list(self._letters)
        if letters:
            atomic_write(self.path, orjson.dumps([letter.to_json() for letter in letters]))
        else:
            self.path.unlink(missing_ok=True)


_ENTRY = re.compile(r"(?P<topic>[^/@\s]+)/(?P<partition>\d+)/(?P<offset>\d+)@(\d+|null)")


def _ahead_of(entry: str, offsets: dict[str, int]) -> bool:
    m = _ENTRY.fullmatch(entry)
    if m is None:  # not an entry (the constructor reads none in): nothing to keep
        return False
    return int(m["offset"]) >= offsets.get(f"{m['topic']}:{m['partition']}", 0)
