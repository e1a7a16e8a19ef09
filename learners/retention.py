"""Registry retention: which versions the learner removes, so the shared volume does not only grow.

Every promotion adds a version directory (about 36 KB with the built-in network), and the default
demo publishes about 90 in two minutes: a learner running for a month would leave hundreds of
thousands. ``plan`` decides from the registry alone which versions to remove; ``prune`` removes them.
A version is kept when it is

- served (``CURRENT``), the first version (the pretrained one: the learner's guards and the retention
  floor are measured against it), or the parent of the served version (probation rolls back to it);
- named in the registry's history (``history.jsonl``: served, rolled back to or from) within
  ``keep_within_s``, or in its last ``keep_last`` entries: an operator's rollback targets;
- pinned by an operator: its id on a line of ``<root>/PINNED``;
- among the ``keep_last`` newest, or created within ``keep_within_s``, but of these at most
  ``max_versions`` (the newest): a learner publishing every second does not keep a day of them.

Removal is safe against a server loading a version at the same moment: the directory is first
renamed to a hidden name (atomic; a reader that already opened its files reads on, one that has not
finds no such version and keeps serving what it serves, as for any unsound version), then deleted.
Versions are never renumbered: the newest is always kept, so no id is ever reused.

>>> from dataclasses import dataclass
>>> ids = [f"v{i:06d}" for i in range(1, 11)]
>>> created = {v: float(i) for i, v in enumerate(ids)}   # one a second; now is 100 s
>>> plan(ids, created, current="v000004", parent="v000003", history=[], pinned={"v000002"}, now=100.0,
...      keep_last=3, keep_within_s=50.0, max_versions=100)
['v000005', 'v000006', 'v000007']
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from learners.registry import Registry, RegistryError

PINNED = "PINNED"

log = logging.getLogger("perennial.registry")


def plan(versions: Sequence[str], created: dict[str, float], *, current: str | None, parent: str | None,
         history: Sequence[dict[str, Any]], pinned: Iterable[str], now: float, keep_last: int, keep_within_s: float,
         max_versions: int) -> list[str]:
    """The versions to remove, oldest first (``versions`` sorted by id, ``created`` their creation
    times; a version without one counts as old)."""
    if not versions:
        return []
    keep = {versions[0], *pinned} | {v for v in (current, parent) if v}
    recent_history = [h for h in history if now - float(h.get("time", 0.0)) <= keep_within_s] + list(history[-keep_last:])
    keep |= {v for h in recent_history for v in (h.get("from"), h.get("to")) if isinstance(v, str)}
    young = [v for v in versions if now - created.get(v, float("-inf")) <= keep_within_s]
    newest = set(versions[-keep_last:]) | set(young[-max_versions:])
    keep |= newest
    return [v for v in versions if v not in keep]


def pinned(registry: Registry) -> set[str]:
    """Ids an operator pinned: one per line of ``<root>/PINNED`` (# starts a comment)."""
    try:
        text = (registry.root / PINNED).read_text()
    except FileNotFoundError:
        return set()
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}


def prune(registry: Registry, *, now: float, keep_last: int, keep_within_s: float, max_versions: int) -> list[str]:
    """Remove what ``plan`` says; returns the ids removed. A version whose manifest cannot be read
    counts as old (it cannot be served either)."""
    for folder in leftover(registry.root):
        shutil.rmtree(folder, ignore_errors=True)
    versions = registry.versions()
    created: dict[str, float] = {}
    for v in versions:
        try:
            created[v] = float(registry.manifest(v)["created_ts"])
        except (RegistryError, KeyError, TypeError, ValueError):
            pass
    try:
        current = registry.current_version()
        parent = registry.manifest(current).get("parent") if current else None
        history = registry.history()
    except (RegistryError, ValueError):
        return []  # a registry that does not say what it serves, or whose history is unreadable: remove nothing
    doomed = plan(versions, created, current=current, parent=parent, history=history, pinned=pinned(registry),
                  now=now, keep_last=keep_last, keep_within_s=keep_within_s, max_versions=max_versions)
    removed = []
    for v in doomed:
        hidden = registry.versions_dir / f".removing-{v}-{os.getpid()}"
        try:
            os.rename(registry.versions_dir / v, hidden)
        except OSError:
            continue  # gone already, or not ours to remove: try again next time
        shutil.rmtree(hidden, ignore_errors=True)
        removed.append(v)
    return removed


def size(registry: Registry) -> tuple[int, int]:
    """(versions, bytes) of the registry's version directories."""
    total, count = 0, 0
    for v in registry.versions():
        count += 1
        folder = registry.versions_dir / v
        try:
            total += sum(p.stat().st_size for p in folder.iterdir())
        except OSError:
            pass
    return count, total


def leftover(root: Path) -> list[Path]:
    """Hidden directories a removal interrupted by a crash left behind."""
    folder = root / "versions"
    return [p for p in folder.iterdir() if p.name.startswith(".removing-")] if folder.is_dir() else []


class Keeper:
    """Applies the retention policy (``RegistrySettings``) for the learner: at start and after a
    publication, at most once every ``prune_every_s``; exports the registry's size. A failure is
    logged and counted, never stopping a round."""

    def __init__(self, registry: Registry, settings: Any, metrics: Any, clock: Any = None):
        import time

        self.registry, self.settings, self.metrics = registry, settings, metrics
        self.clock = clock or time.time
        self.last = float("-inf")

    def maybe_prune(self) -> list[str]:
        now = self.clock()
        if now - self.last < self.settings.prune_every_s:
            return []
        self.last = now
        s = self.settings
        try:
            removed = prune(self.registry, now=now, keep_last=s.keep_last, keep_within_s=s.keep_within_s, max_versions=s.max_versions)
            count, total = size(self.registry)
        except OSError as exc:
            log.error("registry retention failed on %s: %s; trying again in %.0f s", self.registry.root, exc, s.prune_every_s)
            return []
        self.metrics.registry_removed.inc(len(removed))
        self.metrics.registry_versions.set(count)
        self.metrics.registry_bytes.set(total)
        if removed:
            log.info("registry retention removed %d versions (%s to %s); %d kept, %.1f MiB", len(removed), removed[0], removed[-1],
                     count, total / 2**20)
        return removed
