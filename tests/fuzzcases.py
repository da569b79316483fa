"""Generated malformed, adversarial and valid interaction and profile messages, each with what ingest must
make of it: the reasons it may be refused with, or the record it must decode to.

``Fuzzer(seed, limits, now_ms).cases(n)`` is deterministic in its seed. Bad messages carry one fault each
(so the reason is known): random bytes, invalid UTF-8, lone surrogate escapes, deep nesting, huge integers,
NaN and Infinity, wrong types and missing values in every field, over-long strings up to 1 MiB, truncated
or trailing JSON. Valid ones use unicode edge cases (right-to-left marks, zero-width characters, NUL,
astral characters) in ids and maps, duplicated keys (the last one wins), unknown fields, RFC 3339 times
and replays of earlier events.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from schemas.events import EVENT_TYPES, NO_CONTEXT, InteractionEvent, Limits, ProfileEvent

EVENTS, PROFILES = "events", "profiles"
PARSE_REASONS = frozenset({"invalid_utf8", "invalid_json", "not_an_object"})
MEBIBYTE = 1 << 20
DAY_MS = 86_400_000
# Characters that are valid in ids and maps yet trip naive code: bidi marks, zero-width, NUL, BOM,
# line separators, astral and combining characters, the highest code point.
EDGES: tuple[str, ...] = ("\u202e", "\u200f", "\u200b", "\u200d", "\ufeff", "\x00", "\u2028", "\U0001f600", "e\u0301")
EDGES += ("\U0010ffff", "\u05e2\u05d1", "a\tb", '"\\', "\x7f")
BLANKS = (" ", "\t\n", "\u3000", "\u00a0 ", "\u2029")


@dataclass(frozen=True)
class Raw:
    """JSON text put into a document as it is (huge integers, NaN, escapes no encoder writes)."""

    text: bytes


@dataclass(frozen=True)
class Case:
    kind: str  # EVENTS or PROFILES: the topic it goes to
    label: str  # the generator that made it
    raw: bytes | None  # the message value (None: a tombstone)
    reasons: frozenset[str]  # refused with one of these; empty: it must be accepted
    record: InteractionEvent | ProfileEvent | None = None  # what an accepted one decodes to
    key: bytes | None = None

    @property
    def good(self) -> bool:
        return not self.reasons


Pairs = list[tuple[str, Any]]  # a JSON object with its keys in order, duplicates allowed


def render(value: Any, rng: random.Random) -> bytes:
    """JSON text of ``value``: Pairs as objects (duplicates kept), Raw verbatim, the rest via json."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        sep = rng.choice((b",", b", ", b" ,\n"))
        parts = [render(k, rng) + rng.choice((b":", b": ")) + render(v, rng) for k, v in value]
        return b"{" + sep.join(parts) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(render(v, rng) for v in value) + b"]"
    if isinstance(value, dict):
        return render(list(value.items()), rng) if value else b"{}"
    ascii_only = rng.random() < 0.5
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


def rfc3339(ms: int, rng: random.Random) -> str:
    """An RFC 3339 form of ``ms`` (whole milliseconds) in a random zone."""
    minutes = rng.choice((0, 0, 60, -300, 330, 840, -720))
    when = datetime.fromtimestamp(ms // 1000, timezone(timedelta(minutes=minutes)))
    when += timedelta(milliseconds=ms % 1000)
    text = when.isoformat(timespec=rng.choice(("milliseconds", "microseconds")))
    return text[:-6] + rng.choice(("Z", "z")) if minutes == 0 and rng.random() < 0.7 else text


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value (numbers, text with edge characters, shallow nesting)."""
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice((True, False, 0, -1, 2**63, 1e308, -0.0, 0.1))
    if pick == 2:
        return Raw(rng.choice((b"NaN", b"Infinity", b"-Infinity", b"1" * 40, b"1e999", b"-0")))
    if pick in (3, 4, 5):
        return "".join(rng.choice(EDGES) for _ in range(rng.randrange(4))) + "x"
    if pick == 6:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(3))]
    return [(f"k{k}", junk(rng, depth + 1)) for k in range(rng.randrange(3))]


def nested(depth: int, closed: bool = True) -> Raw:
    return Raw(b"[" * depth + (b"]" * depth if closed else b""))


def _ids(rng: random.Random, prefix: str, n: int, max_len: int) -> list[str]:
    """``n`` distinct valid ids, a third of them decorated with edge characters, some at the length limit."""
    out = []
    for k in range(n):
        name = f"{prefix}{k}"
        if rng.random() < 0.33:
            name += rng.choice(EDGES) + rng.choice(EDGES)
        if rng.random() < 0.03:
            name += rng.choice(("x", "\u00e9", "\U0001f600")) * (max_len - len(name))
        out.append(name)
    return out


Mutation = tuple[Any, str]  # (bad value, the reason it must get)


class Fuzzer:
    """Cases in a fixed mix of generators; valid events name users and items from small pools, so
    histories fill up (and old events turn stale) and replays hit the deduplication."""

    def __init__(self, seed: int, limits: Limits, now_ms: int, users: int = 300, items: int = 500) -> None:
        self.rng = random.Random(seed)
        self.seed, self.limits, self.now_ms = seed, limits, now_ms
        self.users = _ids(self.rng, "u", users, limits.max_id_len)
        self.items = _ids(self.rng, "i", items, limits.max_id_len)
        self.serial = 0
        self.sent: list[tuple[Pairs, InteractionEvent]] = []  # earlier valid events, for replays
        self.profile_ts: dict[str, set[int]] = {}  # times used per user: profiles never tie
        gens: list[tuple[Callable[[], Case], int]] = [
            (self.valid_event, 36),
            (self.replay, 4),
            (self.valid_profile, 8),
            (self.bad_field, 22),
            (self.bad_profile, 8),
            (self.bad_bytes, 14),
            (self.deep, 3),
            (self.boundary, 3),
            (self.wrapped, 2),
        ]
        self._gens = [g for g, _ in gens]
        self._weights = [w for _, w in gens]

    def cases(self, n: int) -> Iterator[Case]:
        for _ in range(n):
            yield self.case()

    def case(self) -> Case:
        made = self.rng.choices(self._gens, self._weights)[0]()
        if made.raw is not None and len(made.raw) > self.limits.max_bytes:
            return Case(made.kind, made.label, made.raw, frozenset({"oversized"}), None, made.key)
        return made

    # ----- valid documents
    def _ts(self) -> int:
        return self.now_ms - self.rng.randrange(30 * DAY_MS) + self.rng.randrange(3_600_000)

    def _map(self, entries: int) -> dict[str, str]:
        rng = self.rng
        return {f"k{k}{rng.choice(EDGES)}": rng.choice(EDGES) + "v" * rng.randrange(3) for k in range(entries)}

    def _event(self) -> tuple[Pairs, InteractionEvent]:
        rng = self.rng
        self.serial += 1
        etype = rng.choice(EVENT_TYPES)
        event_id = f"f{self.seed}-{self.serial}" + (rng.choice(EDGES) if rng.random() < 0.2 else "")
        user, item, ts = rng.choice(self.users), rng.choice(self.items), self._ts()
        shown_ts: Any = ts if rng.random() < 0.7 else rfc3339(ts, rng)
        pairs: Pairs = [("event_id", event_id), ("user_id", user), ("item_id", item), ("type", etype)]
        pairs.append(("ts", shown_ts))
        value = None
        if etype == "rating" or rng.random() < 0.05:
            value = rng.choice((1, 2, 3.5, 4, 4.5, 5, 0, -0.0, 1e6, -1e6, 4.25, 123.5, 200))
            pairs.append(("value", value))
        elif rng.random() < 0.03:
            pairs.append(("value", None))  # null stands for absent
        context: dict[str, str] = {}
        if rng.random() < 0.15:
            context = self._map(rng.randrange(self.limits.max_context + 1))
            pairs.append(("context", context))
        ev = InteractionEvent(event_id, user, item, etype, ts, None if value is None else float(value))
        return pairs, ev._replace(context=context or NO_CONTEXT)

    def _decorate(self, pairs: Pairs) -> Pairs:
        """Unknown fields and duplicated keys (a wrong value first, the right one last) that change nothing."""
        rng = self.rng
        out = list(pairs)
        if rng.random() < 0.2:
            out.insert(rng.randrange(len(out) + 1), (rng.choice(("extra", "new_field", "\u202eX", "")), junk(rng)))
        if rng.random() < 0.1:
            name, _ = rng.choice(pairs)
            out.insert(0, (name, junk(rng)))
        if rng.random() < 0.3 and len({k for k, _ in out}) == len(out):  # key order never matters
            rng.shuffle(out)
        return out

    def valid_event(self) -> Case:
        pairs, ev = self._event()
        self.sent.append((pairs, ev))
        return Case(
            EVENTS, "valid_event", render(self._decorate(pairs), self.rng), frozenset(), ev, ev.user_id.encode()
        )

    def replay(self) -> Case:
        """An earlier valid event again, written anew: a duplicate of it."""
        if not self.sent:
            return self.valid_event()
        pairs, ev = self.rng.choice(self.sent)
        return Case(EVENTS, "replay", render(self._decorate(pairs), self.rng), frozenset(), ev, ev.user_id.encode())

    def _profile(self) -> tuple[Pairs, ProfileEvent]:
        user = self.rng.choice(self.users)
        used = self.profile_ts.setdefault(user, set())
        ts = self._ts()
        while ts in used:
            ts += 1
        used.add(ts)
        attributes = self._map(self.rng.randrange(self.limits.max_attributes))  # room for a country
        if self.rng.random() < 0.5:
            attributes["country"] = self.rng.choice(("US", "DE", "\u05e2", "\x00"))
        shown_ts: Any = ts if self.rng.random() < 0.7 else rfc3339(ts, self.rng)
        return [("user_id", user), ("attributes", attributes), ("ts", shown_ts)], ProfileEvent(user, attributes, ts)

    def valid_profile(self) -> Case:
        pairs, prof = self._profile()
        raw = render(self._decorate(pairs), self.rng)
        return Case(PROFILES, "valid_profile", raw, frozenset(), prof, prof.user_id.encode())

    # ----- one fault each
    def _id_faults(self) -> list[Mutation]:
        n = self.limits.max_id_len
        wrong = [None, 7, 1.5, True, ["u"], {"a": "b"}, Raw(b"NaN"), Raw(b"1" * 30), Raw(b"-Infinity")]
        out: list[Mutation] = [(v, "wrong_type") for v in wrong]
        out += [(b, "empty_field") for b in ("", *BLANKS)]
        return [*out, ("x" * (n + 1), "field_too_long"), ("\U0001f600" * (n + 9), "field_too_long")]

    def _ts_faults(self) -> list[Mutation]:
        now, skew = self.now_ms, self.limits.max_future_ms
        wrong = [None, 1.7e12, True, [now], {"ms": now}, Raw(b"NaN")]
        bad = [now // 1000, -5, 0, now + 3 * skew + DAY_MS, "yesterday", "2025-06-15T10:00:00", "", "\x00"]
        bad += ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "2025-13-01T00:00:00Z", "2025-06-15Tz"]
        bad += [Raw(b"1" * 25), Raw(b"-" + b"9" * 25), Raw(b"Infinity"), Raw(b"-Infinity"), Raw(b"7" * 400)]
        bad += [Raw(b"1" * 4000), Raw(b"18446744073709551615"), rfc3339(now + 3 * skew, self.rng)]
        return [(v, "wrong_type") for v in wrong] + [(v, "bad_timestamp") for v in bad]

    def _map_faults(self, entries: int) -> list[Mutation]:
        long = self.limits.max_context_len + 1
        wrong = [["a"], "x", 3, True, {"k": 3}, {"k": None}, {"k": ["v"]}, {"k": {"v": "w"}}, Raw(b"NaN")]
        large = [{f"k{k}": "v" for k in range(entries + 1)}, {"k" * long: "v"}, {"k": "\u200b" * long}]
        return [(v, "wrong_type") for v in wrong] + [(v, "context_too_large") for v in large]

    def _faults(self, name: str) -> list[Mutation]:
        if name in ("event_id", "user_id", "item_id"):
            return self._id_faults()
        if name == "type":
            odd = ["View", "view ", "view\u200b", "", "teleport", 3, True, ["view"], {"view": 1}, Raw(b"NaN")]
            return [(None, "missing_field"), *((v, "unknown_type") for v in odd)]
        if name == "ts":
            return self._ts_faults()
        if name == "value":
            bad = [Raw(b"NaN"), Raw(b"Infinity"), Raw(b"-Infinity"), 1e9, -1e6 - 1, Raw(b"1e400"), Raw(b"9" * 25)]
            bad += [Raw(b"9" * 500), Raw(b"-" + b"9" * 4000)]
            wrong = ["5", True, [5], {"v": 5}]
            return [
                (None, "rating_without_value"),
                *((v, "wrong_type") for v in wrong),
                *((v, "bad_value") for v in bad),
            ]
        return self._map_faults(self.limits.max_context)

    def _mutate(self, pairs: Pairs, name: str, bad: Mutation, label: str) -> tuple[bytes, frozenset[str], str]:
        """``pairs`` with field ``name`` given the bad value (or dropped: missing_field), its good value
        sometimes left before it as a duplicate key that the bad one overrides."""
        rng = self.rng
        value, reason = bad
        out = [(k, v) for k, v in pairs if k != name]
        if rng.random() < 0.1 and name not in ("value", "context"):
            return render(out, rng), frozenset({"missing_field"}), f"{label}:missing:{name}"
        good = [(k, v) for k, v in pairs if k == name]
        at = rng.randrange(len(out) + 1)
        out[at:at] = [*(good if rng.random() < 0.2 else []), (name, value)]
        return render(out, rng), frozenset({reason}), f"{label}:{name}:{reason}"

    def bad_field(self) -> Case:
        pairs, ev = self._event()
        name = self.rng.choice(("event_id", "user_id", "item_id", "type", "ts", "value", "context"))
        if name == "value":
            pairs = [(k, "rating" if k == "type" else v) for k, v in pairs if k != "value"]
            pairs.append(("value", 4))
        if name == "value" and self.rng.random() < 0.1:  # a rating without its value
            raw = render([(k, v) for k, v in pairs if k != "value"], self.rng)
            return Case(EVENTS, "bad_field:missing:value", raw, frozenset({"rating_without_value"}))
        bad = self.rng.choice(self._faults(name))
        raw, reasons, label = self._mutate(pairs, name, bad, "bad_field")
        return Case(EVENTS, label, raw, reasons, None, ev.user_id.encode())

    def bad_profile(self) -> Case:
        pairs, prof = self._profile()
        name = self.rng.choice(("user_id", "attributes", "ts"))
        if name == "user_id":
            faults = self._id_faults()
        elif name == "ts":
            faults = self._ts_faults()
        else:
            faults = [*self._map_faults(self.limits.max_attributes), (None, "wrong_type")]
            faults += [({"_seg": "x"}, "reserved_name"), ({"a": "b", "_": ""}, "reserved_name")]
        raw, reasons, label = self._mutate(pairs, name, self.rng.choice(faults), "bad_profile")
        return Case(PROFILES, label, raw, reasons, None, prof.user_id.encode())

    # ----- below the fields: bytes, text, syntax
    def _marked(self) -> bytes:
        """A valid event's text with ``@@`` where a string's content may be spliced in."""
        pairs, _ = self._event()
        at = self.rng.randrange(len(pairs) + 1)
        name = self.rng.choice(("event_id", "user_id", "note"))
        pairs = [(k, v) for k, v in pairs if k != name]
        return render([*pairs[:at], (name, "x@@y"), *pairs[at:]], self.rng)

    def bad_bytes(self) -> Case:
        rng = self.rng
        pick = rng.randrange(8)
        if pick == 0:  # random bytes that do not start an object
            raw = bytes([rng.choice(b"!#%&*+-.0123456789<>?[]abcfnt\x00\x80\xff")]) + rng.randbytes(rng.randrange(200))
            return Case(EVENTS, "random_bytes", raw, PARSE_REASONS)
        if pick == 1:
            seq = rng.choice((b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf5\x80\x80\x80", b"\x80"))
            return Case(EVENTS, "invalid_utf8", self._marked().replace(b"@@", seq), frozenset({"invalid_utf8"}))
        if pick == 2:
            esc = rng.choice((b"\\ud800", b"\\udfff", b"\\ud83d\\ud83d", b"\\ude00\\ud83d"))
            return Case(EVENTS, "lone_surrogate", self._marked().replace(b"@@", esc), frozenset({"invalid_utf8"}))
        if pick == 3:  # control characters must be escaped inside JSON strings
            raw = self._marked().replace(b"@@", rng.choice((b"\x00", b"\n", b"\x1f")))
            return Case(EVENTS, "raw_control", raw, frozenset({"invalid_json"}))
        if pick == 4:
            text = self._marked()
            cut = text[: rng.randrange(len(text) - 1)]
            return Case(EVENTS, "truncated", cut, frozenset({"invalid_json", "invalid_utf8"}))
        if pick == 5:
            tail = rng.choice((b" x", b"{}", b",", b"]", b"\x00", b"}"))
            return Case(EVENTS, "trailing", self._marked() + tail, frozenset({"invalid_json"}))
        if pick == 6:
            raw = rng.choice((b"", b" ", b"\n\t", b"\xef\xbb\xbf" + self._marked(), b"{", b"}"))
            return Case(rng.choice((EVENTS, PROFILES)), "empty_or_bom", raw, frozenset({"invalid_json"}))
        return Case(rng.choice((EVENTS, PROFILES)), "tombstone", None, frozenset({"invalid_json"}), None, b"t")

    def deep(self) -> Case:
        """Nesting the parsers refuse (deeper than 1,100), or accept (900 at most) where it does no harm."""
        rng = self.rng
        pick = rng.randrange(4)
        if pick == 0:
            raw = render(nested(rng.randrange(1100, 9000), closed=rng.random() < 0.5), rng)
            return Case(EVENTS, "deep_top", raw, frozenset({"invalid_json"}))
        if pick == 1:
            return Case(EVENTS, "deep_array", render(nested(rng.randrange(1, 900)), rng), frozenset({"not_an_object"}))
        pairs, ev = self._event()
        if pick == 2:
            pairs.append(("extra", nested(rng.randrange(1100, 5000))))
            return Case(EVENTS, "deep_field", render(pairs, rng), frozenset({"invalid_json"}))
        pairs.append(("extra", nested(rng.randrange(1, 900))))
        return Case(EVENTS, "deep_unknown_field", render(pairs, rng), frozenset(), ev, ev.user_id.encode())

    def boundary(self) -> Case:
        """A valid message padded to exactly the size limit (accepted), one byte over it, or carrying a 1 MiB
        string (oversized)."""
        rng = self.rng
        pairs, ev = self._event()
        over = rng.randrange(3)
        if over == 2:
            pairs.append((rng.choice(("blob", "item_id")), rng.choice(EDGES[:8]) + "x" * MEBIBYTE))
            return Case(EVENTS, "mebibyte", render(pairs, rng), frozenset({"oversized"}))
        text = render(pairs, rng)
        text = text[:-1] + b" " * (self.limits.max_bytes + over - len(text)) + b"}"
        if over:
            return Case(EVENTS, "over_limit", text, frozenset({"oversized"}))
        self.sent.append((pairs, ev))
        return Case(EVENTS, "at_limit", text, frozenset(), ev, ev.user_id.encode())

    def wrapped(self) -> Case:
        """Valid JSON that is no object: scalars, or the event inside an array."""
        rng = self.rng
        raw = rng.choice((b"null", b"true", b"3", b'"view"', b"[]", b"NaN", b"-Infinity", b"1" * 5000))
        if rng.random() < 0.3:
            raw = b"[" + render(self._event()[0], rng) + b"]"
        reasons = frozenset({"invalid_json"}) if raw == b"1" * 5000 else frozenset({"not_an_object"})
        return Case(rng.choice((EVENTS, PROFILES)), "wrapped", raw, reasons)
