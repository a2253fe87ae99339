"""The file source: files and watched directories, each file emitted once across restarts.

Each scan lists the configured files and the new files of the configured directories
(JSONL/CSV by pattern, or the day files of a Slack export, or DiscordChatExporter JSON
files), oldest first, leaving alone a file modified within ``settle_s`` (still being
written). A file already read whole, with the same size and mtime, is skipped without
reading it; otherwise its sha256 says whether it is the file of the saved state, or that
file with records appended (a growing log: resume after the last saved record), or a new
one (start over: identical records get identical ids, so the stores keep each once).
Records are emitted in acknowledged batches, and the file's position saved after each
(emit, then save); a record that cannot be a message is a dead letter with its file,
line and reason.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from aet.pipeline.config import FilesSourceSettings
from aet.pipeline.ingest import refusal
from aet.pipeline.ports import FileState, IngestState
from aet.pipeline.records import DeadLetter, Message
from aet.pipeline.sources.emit import Emitter, SourceStats
from aet.pipeline.sources.formats import (
    Draft,
    Record,
    Refused,
    csv_records,
    discord_records,
    jsonl_records,
    slack_day_records,
    slack_users,
)

log = logging.getLogger(__name__)
SLACK_METADATA = {"users.json", "channels.json", "groups.json", "dms.json", "mpims.json", "integration_logs.json"}


def file_sha256(path: Path, limit: int | None = None) -> str:
    """sha256 of the file, or of its first ``limit`` bytes."""
    digest = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while left is None or left > 0:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()


class FileSource:
    """Reads the files of one ``files`` source (see the module docstring)."""

    def __init__(
        self,
        settings: FilesSourceSettings,
        state: IngestState,
        emitter: Emitter,
        *,
        wall_clock: Callable[[], float] = time.time,
        max_text_chars: int = 5000,
    ) -> None:
        self.settings = settings
        self.state = state
        self.emitter = emitter
        self.wall_clock = wall_clock
        self.max_text_chars = max_text_chars
        self.stats = SourceStats()
        self.files_read = 0

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def interval_s(self) -> float:
        return self.settings.poll_interval_s

    def step(self) -> None:
        self.scan_once()

    def recover(self) -> None:
        """Nothing to undo after a failed publish: the position was not saved, the next scan emits the batch again."""

    def close(self) -> None:
        """No resource held between scans."""

    def scan_once(self) -> SourceStats:
        """Read every settled file not read yet; returns the running totals."""
        for path in self.candidates():
            try:
                self.read_file(path)
            except OSError as exc:  # vanished or unreadable: tried again next scan
                self.stats.errors += 1
                log.warning("%s: cannot read %s: %s", self.name, path, exc)
        return self.stats

    def candidates(self) -> list[Path]:
        """The files to look at, oldest first (so a directory is read in the order it was written)."""
        found: dict[Path, None] = {}
        for root in self.settings.paths:
            for path in self._files_of(Path(root)):
                found.setdefault(path.resolve(), None)
        settled = self.wall_clock() - self.settings.settle_s
        out = []
        for path in found:
            try:
                st = path.stat()
            except OSError:
                continue
            if st.st_mtime <= settled:
                out.append((st.st_mtime, str(path), path))
        return [p for _, _, p in sorted(out)]

    def _files_of(self, root: Path) -> Iterator[Path]:
        fmt = self.settings.format
        if root.is_file():
            yield root
        elif not root.is_dir():
            return
        elif fmt == "slack_export":
            yield from sorted(root.glob("*/*.json"))
        elif fmt == "discord_export":
            yield from sorted(root.glob("*.json"))
        else:
            for pattern in self.settings.patterns:
                yield from sorted(p for p in root.glob(pattern) if p.is_file())

    def _records(self, path: Path) -> Iterator[Record]:
        fmt = self.settings.format
        if fmt == "slack_export":
            yield from slack_day_records(path, slack_users(path.parent.parent))
        elif fmt == "discord_export":
            yield from discord_records(path)
        elif fmt == "csv" or (fmt == "auto" and path.suffix.lower() == ".csv"):
            yield from csv_records(path)
        else:
            yield from jsonl_records(path)

    def read_file(self, path: Path) -> None:
        """Emit the records of ``path`` not emitted yet, saving the position after each acknowledged batch."""
        if self.settings.format == "slack_export" and path.name in SLACK_METADATA:
            return
        st = path.stat()
        key = str(path)
        known = self.state.file(self.name, key)
        if known is not None and known.done and (known.size, known.mtime) == (st.st_size, st.st_mtime):
            self.stats.skipped += 1
            return
        digest = file_sha256(path)
        if known is not None and known.sha256 == digest and known.done:
            self.stats.skipped += 1  # touched, not changed
            self.state.save_file(self.name, FileState(key, st.st_size, st.st_mtime, digest, known.position, True))
            return
        start = known.position if known is not None and self._continues(path, known, digest) else 0
        position = 0
        batch: list[Record] = []
        for record in self._records(path):
            position += 1
            if position <= start:
                continue
            batch.append(record)
            if len(batch) >= self.settings.batch_size:
                self._emit(path, batch)
                self.state.save_file(self.name, FileState(key, st.st_size, st.st_mtime, digest, position))
                batch = []
        self._emit(path, batch)
        self.state.save_file(self.name, FileState(key, st.st_size, st.st_mtime, digest, position, done=True))
        self.files_read += 1
        log.info("%s: read %s (%d records)", self.name, path, position)

    @staticmethod
    def _continues(path: Path, known: FileState, digest: str) -> bool:
        """Whether ``path`` is the file of ``known`` (same sha256) or that file with lines appended (a log that
        grows: its first ``known.size`` bytes have the saved sha256), so reading resumes after ``known.position``."""
        if known.sha256 == digest:
            return True
        return path.stat().st_size > known.size and file_sha256(path, known.size) == known.sha256

    def _emit(self, path: Path, batch: Sequence[Record]) -> None:
        messages: list[Message] = []
        dead: list[DeadLetter] = []
        stage = f"ingest:{self.name}"
        for record in batch:
            if isinstance(record, Refused):
                dead.append(DeadLetter.of(record.raw, stage=stage, reason=record.reason))
            elif isinstance(record, Draft):
                try:
                    messages.append(self._message(record))
                except ValueError as exc:
                    dead.append(DeadLetter.of(record.raw, stage=stage, reason=f"{path.name}: {refusal(exc)}"))
        self.emitter.emit(messages, dead, self.stats)

    def _message(self, draft: Draft) -> Message:
        return draft.message(self.name, self.settings.message_source, self.max_text_chars)
