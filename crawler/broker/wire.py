"""Tasks, results and the policy as JSON: what a data-only broker carries.

Redis holds strings, and a string from Redis is not trusted the way a
pickle from a keyed manager connection would have to be: decoding here only
builds the named tuples, checking each field's type, so an entry written by
another program (or another version) fails that entry with a clear message
and never runs code. Tasks and results travel as JSON arrays in field order,
which keeps every entry short; fields added later go at the end with
defaults, so an older peer's shorter arrays still decode.
"""

from __future__ import annotations

import json
from typing import Any

from ..messages import Outcome, Policy, Result, Task

__all__ = [
    "MalformedEntry",
    "decode_policy",
    "decode_result",
    "decode_task",
    "encode_policy",
    "encode_result",
    "encode_task",
]

_DUMPS = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False).encode
_LOADS = json.JSONDecoder().decode
_RAW_DECODE = json.JSONDecoder().raw_decode
_STRING = json.encoder.encode_basestring_ascii

# The type each field must have once decoded; None stands for "or null".
_TASK_TYPES: tuple[tuple[type, ...], ...] = (
    (int,), (str,), (int,), (int,), (bool,), (str, type(None)), (list, type(None)), (int, type(None)),
    (str, type(None)),
)  # fmt: skip
_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "url": (str,),
    "outcome": (str,),
    "path": (str, type(None)),
    "bytes": (int,),
    "sha256": (str, type(None)),
    "content_type": (str, type(None)),
    "http_status": (int, type(None)),
    "error": (str, type(None)),
    "retry_after": (int, float, type(None)),
    "attempt": (int,),
    "worker": (str,),
    "elapsed": (int, float),
    "kept": (bool,),
    "links": (list,),
    "base": (str, type(None)),
    "page_url": (str, type(None)),
    "robots": (str, type(None)),
    "width": (int, type(None)),
    "height": (int, type(None)),
    "image_format": (str, type(None)),
    "original_width": (int, type(None)),
    "original_height": (int, type(None)),
    "shard": (str, type(None)),
    "shard_samples": (int,),
}
assert tuple(_RESULT_TYPES) == Result._fields, "the wire types must follow Result's fields"
_RESULT_SIGNATURE = tuple(_RESULT_TYPES.values())
_TASK_SIGNATURES: set[tuple[type, ...]] = set()
_RESULT_SIGNATURES: set[tuple[type, ...]] = set()


class MalformedEntry(ValueError):
    """An entry in the broker that is not what this version of crawler writes."""


def encode_task(task: Task) -> str:
    # By hand, as json.dumps would write it: a window refill encodes thousands at a time,
    # and this is a third of the cost of going through the encoder.
    task_id, url, attempt, depth, robots, parent, auth, row, columns = task
    return (
        f"[{int(task_id)},{_STRING(url)},{int(attempt)},{int(depth)},{'true' if robots else 'false'},"
        f"{'null' if parent is None else _STRING(parent)},"
        f"{'null' if auth is None else '[' + _STRING(auth[0]) + ',' + _STRING(auth[1]) + ']'},"
        f"{'null' if row is None else int(row)},{'null' if columns is None else _STRING(columns)}]"
    )


def decode_task(text: str | bytes) -> Task:
    fields = _array(text, "task", len(_TASK_TYPES))
    _check_types(fields, _TASK_TYPES, Task._fields, "task", _TASK_SIGNATURES)
    if len(fields) > 6 and fields[6] is not None:
        auth = fields[6]
        if len(auth) != 2 or not all(isinstance(part, str) for part in auth):
            raise MalformedEntry("task field auth: not a (user, password) pair")
        fields[6] = (auth[0], auth[1])
    return Task(*fields)


def encode_result(result: Result) -> str:
    return _DUMPS(result)


def decode_result(text: str | bytes) -> Result:
    fields = _array(text, "result", len(_RESULT_TYPES))
    _check_types(fields, _RESULT_SIGNATURE, Result._fields, "result", _RESULT_SIGNATURES)
    try:
        fields[2] = Outcome(fields[2])
    except ValueError:
        raise MalformedEntry(f"result field outcome: {fields[2]!r} is not one of ok, failed, retry") from None
    if len(fields) > 14:
        if not all(isinstance(link, str) for link in fields[14]):
            raise MalformedEntry("result field links: not a list of strings")
        fields[14] = tuple(fields[14])
    return Result(*fields)


def encode_policy(policy: Policy) -> str:
    return _DUMPS(policy.to_wire())


def decode_policy(text: str | bytes) -> Policy:
    try:
        data = _LOADS(text.decode() if isinstance(text, bytes) else text)
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedEntry(f"policy: not JSON ({error})") from None
    if not isinstance(data, dict):
        raise MalformedEntry("policy: not a JSON object")
    try:
        return Policy.from_wire(data)
    except TypeError as error:
        raise MalformedEntry(f"policy: {error}") from None


def _array(text: str | bytes, what: str, most: int) -> list[Any]:
    try:
        text = text.decode() if isinstance(text, bytes) else text
        # raw_decode: what we write has no whitespace around it to skip; trailing bytes are refused below.
        value, end = _RAW_DECODE(text)
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedEntry(f"{what}: not JSON ({error})") from None
    if end != len(text):
        raise MalformedEntry(f"{what}: not JSON (extra data at {end})")
    if not isinstance(value, list) or not 3 <= len(value) <= most:
        raise MalformedEntry(f"{what}: not an array of 3 to {most} fields")
    return value


def _check_types(
    fields: list[Any],
    allowed: tuple[tuple[type, ...], ...],
    names: tuple[str, ...],
    what: str,
    seen_good: set[tuple[type, ...]],
) -> None:
    """Raise MalformedEntry unless each field has one of its allowed types (exactly: a bool is no int).

    Results come by the thousand a second with a handful of shapes (which
    fields are null, float or int): a shape checked once is known good.
    """
    shape = tuple(map(type, fields))
    if shape in seen_good:
        return
    for value_type, types, name in zip(shape, allowed, names, strict=False):
        if value_type not in types:
            raise MalformedEntry(f"{what} field {name}: {value_type.__name__} is not allowed here")
    if len(seen_good) < 4096:  # bounded, whatever shapes a hostile writer invents
        seen_good.add(shape)
