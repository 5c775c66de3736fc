"""Append-only episode records (JSON lines) for evaluations that must survive a kill: ``eva-campaign``, ``eva-mpc``.

Each finished episode is one line, flushed and synced at once. Reopening the file cuts a record torn by a
kill, so a rerun knows exactly which episodes are done and redoes only the rest. Records are identified by
the values of ``key`` fields (for example evaluator, policy, task, seed) and carry a digest of the settings
that produced them (``settings_digest``): a rerun with other settings (another checkpoint, sampler, noise
level, step limit...) does not count an old record as done; the new record supersedes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def settings_digest(settings: dict) -> str:
    """A short, stable fingerprint of JSON-able settings."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_records(path: Path, key: tuple[str, ...]) -> dict[tuple, dict]:
    """Finished records by their key values; a torn last line (killed mid-write) is dropped."""
    records = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: dropping an unfinished line", path)
                continue
            records[tuple(r[k] for k in key)] = r
    return records


class RecordLog:
    def __init__(self, path: Path, key: tuple[str, ...]):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():  # cut a record torn by a kill, so that the next one starts on its own line
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                log.warning("%s: removing an unfinished last record (%d bytes)", path, len(data) - end)
                with open(path, "r+b") as f:
                    f.truncate(end)
        self.key = key
        self.records = load_records(path, key)
        self.file = open(path, "a")

    def done(self, *values, settings: str | None = None) -> bool:
        """A record with these key values exists and was made with these settings."""
        record = self.records.get(tuple(values))
        return record is not None and record.get("settings") == settings

    def add(self, record: dict) -> None:
        self.records[tuple(record[k] for k in self.key)] = record
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()
