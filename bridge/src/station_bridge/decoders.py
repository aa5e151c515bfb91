"""Framings: ZMQ frames -> (topic, record dict). Chosen per subscription by configuration.

- msgpack:        multipart [topic, msgpack map]
- json:           multipart [topic, JSON object]
- text_json:      one frame `topic<space>{json object}`
- text_delimited: one frame `topic<space>v1<DELIM>v2...` with a declared ordered field list
Every failure raises DecodeError with a reason that names a counter (bad_framing, oversized,
undecodable, invalid_utf8, too_deep, integer_overflow, not_a_map).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import msgpack

from .config import SubscriptionSpec


class DecodeError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


Decoder = Callable[[list[bytes]], tuple[str, dict]]


def _topic(frame: bytes) -> str:
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", "topic is not UTF-8") from exc


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise DecodeError("not_a_map", f"{what} payload is a {type(value).__name__}, not a map")
    return value


def _json(payload: bytes) -> object:
    try:
        return json.loads(payload)
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", f"json: {exc}") from exc
    except RecursionError as exc:
        raise DecodeError("too_deep", "json: nested too deeply") from exc
    except ValueError as exc:
        # Python refuses integers beyond 4300 digits as text (a ValueError naming the limit).
        reason = "integer_overflow" if "integer string conversion" in str(exc) else "undecodable"
        raise DecodeError(reason, f"json: {str(exc)[:200]}") from exc


def _check_size(frames: list[bytes], limit: int) -> None:
    for frame in frames:
        if len(frame) > limit:
            raise DecodeError("oversized", f"frame of {len(frame)} bytes exceeds max_frame_bytes={limit}")


def build(spec: SubscriptionSpec) -> Decoder:
    limit = spec.max_frame_bytes
    unpackb = msgpack.unpackb

    if spec.framing == "msgpack":
        topics: dict[bytes, str] = {}

        def checked_msgpack(frames: list[bytes]) -> tuple[str, dict]:
            if len(frames) != 2:
                raise DecodeError("bad_framing", f"expected 2 frames [topic, msgpack], got {len(frames)}")
            _check_size(frames, limit)
            try:
                record = unpackb(frames[1], raw=False, strict_map_key=False)
            except msgpack.StackError as exc:
                raise DecodeError("too_deep", "msgpack: nested deeper than the unpacker's limit") from exc
            except (ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
                reason = "invalid_utf8" if isinstance(exc, UnicodeDecodeError) else "undecodable"
                raise DecodeError(reason, f"msgpack: {exc}") from exc
            except Exception as exc:  # msgpack raises a few odd types on hostile input
                raise DecodeError("undecodable", f"msgpack: {exc!r}") from exc
            return _topic(frames[0]), _object(record, "msgpack")

        def decode_msgpack(frames: list[bytes]) -> tuple[str, dict]:
            # Fast path for well-formed messages; anything unusual is re-checked step by step.
            if len(frames) == 2:
                topic_bytes, payload = frames
                if len(payload) <= limit:
                    topic = topics.get(topic_bytes)
                    if topic is not None:
                        try:
                            record = unpackb(payload, raw=False, strict_map_key=False)
                        except Exception:
                            return checked_msgpack(frames)
                        if type(record) is dict:
                            return topic, record
                    elif len(topic_bytes) <= 256 and len(topics) < 10_000:
                        topics[topic_bytes] = _topic(topic_bytes)
            return checked_msgpack(frames)
        return decode_msgpack

    if spec.framing == "json":
        def decode_json(frames: list[bytes]) -> tuple[str, dict]:
            if len(frames) != 2:
                raise DecodeError("bad_framing", f"expected 2 frames [topic, json], got {len(frames)}")
            _check_size(frames, limit)
            return _topic(frames[0]), _object(_json(frames[1]), "json")
        return decode_json

    def split(frames: list[bytes]) -> tuple[str, bytes]:
        if len(frames) != 1:
            raise DecodeError("bad_framing", f"expected 1 frame `topic payload`, got {len(frames)}")
        _check_size(frames, limit)
        topic, sep, payload = frames[0].partition(b" ")
        if not sep:
            raise DecodeError("bad_framing", "no space between topic and payload")
        return _topic(topic), payload

    if spec.framing == "text_json":
        def decode_text_json(frames: list[bytes]) -> tuple[str, dict]:
            topic, payload = split(frames)
            return topic, _object(_json(payload), "json")
        return decode_text_json

    names = spec.field_order
    delimiter = spec.delimiter.encode("utf-8")

    def decode_delimited(frames: list[bytes]) -> tuple[str, dict]:
        topic, payload = split(frames)
        try:
            values = payload.decode("utf-8").split(delimiter.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DecodeError("invalid_utf8", "delimited payload is not UTF-8") from exc
        if len(values) != len(names):
            raise DecodeError("bad_framing", f"expected {len(names)} delimited values, got {len(values)}")
        return topic, dict(zip(names, values, strict=True))
    return decode_delimited
