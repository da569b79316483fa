"""Dead letters: messages ingest refuses go to ``<topic><dlq_suffix>`` with the reason and the source
coordinates in headers, acknowledged by the broker before the batch's offsets are committed."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from daemon.ingest.source import KafkaOptions, Record

log = logging.getLogger(__name__)


class DeadLetterError(RuntimeError):
    """Some dead letters were not acknowledged; they stay pending and are re-sent."""


# The dead-letter headers: named here only (docs/operations.md lists them for operators).
REASON = "recd.reason"
DETAIL = "recd.detail"
SOURCE_TOPIC = "recd.source.topic"
SOURCE_PARTITION = "recd.source.partition"
SOURCE_OFFSET = "recd.source.offset"
FAILED_AT_MS = "recd.failed_at_ms"
TRUNCATED = "recd.truncated"  # "1": the value is only the first bytes of the payload (maybe none)
ORIGINAL_BYTES = "recd.original_bytes"  # the whole payload's length
SHA256 = "recd.sha256"  # hex SHA-256 of the whole payload, to match it with the source message
DETAIL_MAX_BYTES = 1024
HEADER_ROOM = 16 * 1024  # what headers and record framing add to a dead letter's payload, at most
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)  # never fit, never retried

Headers = list[tuple[str, bytes]]


def dead_letter_headers(msg: Record, reason: str, detail: str) -> Headers:
    """Why the message was refused and where it came from."""
    return [
        (REASON, reason.encode()),
        (DETAIL, detail.encode("utf-8", "replace")[:DETAIL_MAX_BYTES]),
        (SOURCE_TOPIC, msg.topic.encode()),
        (SOURCE_PARTITION, str(msg.partition).encode()),
        (SOURCE_OFFSET, str(msg.offset).encode()),
        (FAILED_AT_MS, str(int(time.time() * 1000)).encode()),
    ]


def cut_payload(payload: bytes, max_bytes: int) -> tuple[bytes, Headers]:
    """The value a dead letter carries: the payload itself up to ``max_bytes``, else its first
    ``max_bytes`` and the headers saying so."""
    if len(payload) <= max_bytes:
        return payload, []
    digest = hashlib.sha256(payload).hexdigest()
    marks = [(TRUNCATED, b"1"), (ORIGINAL_BYTES, str(len(payload)).encode()), (SHA256, digest.encode())]
    return payload[:max_bytes], marks


@dataclass(frozen=True)
class DeadLetterOptions:
    kafka: KafkaOptions
    suffix: str  # dead-letter topic = source topic + suffix
    max_payload_bytes: int  # longer payloads are cut (0: headers only)

    @property
    def max_request_size(self) -> int:
        """The dead-letter producer's max_request_size: the largest payload kept plus its headers."""
        return self.max_payload_bytes + HEADER_ROOM


class _Letter(NamedTuple):
    msg: Record
    headers: Headers  # dead_letter_headers(), without the truncation marks
    max_bytes: int  # payload bytes it may carry: the setting, or 0 once refused as too large
    future: Any  # kafka-python's FutureRecordMetadata; None when send() itself failed


class DeadLetters:
    """Sends refused messages to ``<topic><dlq_suffix>`` with the reason in headers: byte for byte
    up to ``max_payload_bytes``, cut beyond; a letter still too large goes out as headers only."""

    def __init__(self, options: DeadLetterOptions, producer_factory: Callable[[], Any] | None = None) -> None:
        self.options = options
        self.suffix = options.suffix
        self.max_bytes = options.max_payload_bytes
        self._factory = producer_factory or self._make_producer
        self._producer: Any = None  # made on the first dead letter
        self.pending: list[_Letter] = []

    def _make_producer(self) -> KafkaProducer:
        return KafkaProducer(
            **self.options.kafka.client("dlq"),
            acks="all",
            linger_ms=5,
            retries=5,
            max_request_size=self.options.max_request_size,
            metrics_enabled=False,
        )

    @property
    def producer(self) -> Any:
        if self._producer is None:
            self._producer = self._factory()
        return self._producer

    def send(self, msg: Record, reason: str, detail: str) -> None:
        self._send(msg, dead_letter_headers(msg, reason, detail), self.max_bytes)

    def _send(self, msg: Record, headers: Headers, max_bytes: int) -> None:
        value, marks = cut_payload(msg.value or b"", max_bytes)
        try:
            future = self.producer.send(msg.topic + self.suffix, value=value, headers=headers + marks)
        except TOO_LARGE as exc:
            self._refused(_Letter(msg, headers, max_bytes, None), exc)
            return
        except KafkaError as exc:  # no broker, no metadata: flush re-sends it and raises
            log.warning("dead letter of %s not sent (%s); will retry", _where(msg), exc)
            future = None
        self.pending.append(_Letter(msg, headers, max_bytes, future))

    def _refused(self, letter: _Letter, exc: Exception) -> None:
        """Refused as too large (by this producer or the broker): send its headers alone, once."""
        if letter.max_bytes == 0:
            log.error("dead letter of %s refused even without its payload (%s); dropped", _where(letter.msg), exc)
            return
        log.warning("dead letter of %s refused as too large (%s); sending its headers alone", _where(letter.msg), exc)
        self._send(letter.msg, letter.headers, 0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every dead letter is acknowledged (or dropped as too large even without its
        payload); those that failed otherwise are re-sent, and this raises."""
        while self.pending:
            self.producer.flush(timeout=timeout_s)
            letters, self.pending = self.pending, []
            failed = sum(self._settle(letter) for letter in letters)
            if failed:
                raise DeadLetterError(f"{failed} dead letters not acknowledged; re-sent")

    def _settle(self, letter: _Letter) -> int:
        """1 when the letter failed for a reason that may pass (it is re-sent as it was), else 0."""
        future = letter.future
        if future is not None and future.succeeded():
            return 0
        error = future.exception if future is not None else None
        if isinstance(error, TOO_LARGE):
            self._refused(letter, error)
            return 0
        self._send(letter.msg, letter.headers, letter.max_bytes)
        return 1

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


def _where(msg: Record) -> str:
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"
