"""Background LISTEN loop: report changes -> roll-up refresh; invalidation messages -> cache.

One daemon thread per tile service with its own autocommit connection.  On
``petalapor_reports`` (sent by the triggers) it calls ``on_wake`` (drain the
queue, refresh, notify); on ``petalapor_tiles`` it hands the payload to
``on_message``.  After a lost connection it reconnects with back-off and
calls ``on_reconnect`` (messages may have been missed: the service then drops
every report-derived tile) before catching up on the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from tiles.rollup import CHANGES_CHANNEL, INVALIDATE_CHANNEL

log = logging.getLogger("petalapor.tiles")

#: Seconds between retries of a failed refresh even without a new notification.
RETRY_SECONDS = 5.0


class ChangeListener:
    """The LISTEN thread (start/stop; ``processed`` counts completed wake-ups)."""

    def __init__(
        self,
        dsn: str,
        on_wake: Callable[[], object],
        on_message: Callable[[str], object],
        on_reconnect: Callable[[], object],
        poll_seconds: float = 0.25,
    ) -> None:
        self.dsn = dsn
        self.on_wake = on_wake
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()
        self.processed = 0

    def start(self) -> None:
        """Start the thread (returns once it listens, or after 10 s)."""
        self._thread = threading.Thread(
            target=self._run, name="petalapor-tiles-listener", daemon=True
        )
        self._thread.start()
        self.listening.wait(10)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.5
        connected_before = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.dsn, autocommit=True, application_name="petalapor-tiles-listener"
                ) as conn:
                    for channel in (CHANGES_CHANNEL, INVALIDATE_CHANNEL):
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if connected_before:
                        self.on_reconnect()
                    connected_before = True
                    self.listening.set()
                    backoff = 0.5
                    self._loop(conn)
            except psycopg.OperationalError as exc:
                self.listening.clear()
                if self._stop.is_set():
                    break
                log.warning(
                    "tile listener lost its connection (%s); retrying in %.1f s", exc, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:  # noqa: BLE001 - keep listening whatever a callback did
                log.exception("tile listener failed; restarting")
                self._stop.wait(1.0)

    def _loop(self, conn: psycopg.Connection) -> None:
        wake = True  # catch up with whatever was queued before we listened
        last_failure = 0.0
        while not self._stop.is_set():
            if wake or (last_failure and time.monotonic() - last_failure > RETRY_SECONDS):
                try:
                    self.on_wake()
                    self.processed += 1
                    last_failure = 0.0
                except psycopg.OperationalError:
                    raise
                except Exception:  # noqa: BLE001 - retried later; the queue keeps the rows
                    log.exception("tile roll-up refresh failed; will retry")
                    last_failure = time.monotonic()
            wake = False
            for note in conn.notifies(timeout=self.poll_seconds):
                if note.channel == CHANGES_CHANNEL:
                    wake = True
                else:
                    try:
                        self.on_message(note.payload)
                    except Exception:  # noqa: BLE001
                        log.exception("bad tile invalidation message ignored")
