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

# The type each field must have once decoded; None stands for "or null".
_TASK_TYPES: tuple[tuple[type, ...], ...] = (
    (int,), (str,), (int,), (int,), (bool,), (str, type(None)), (list, type(None)),
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
}
assert tuple(_RESULT_TYPES) == Result._fields, "the wire types must follow Result's fields"


class MalformedEntry(ValueError):
    """An entry in the broker that is not what this version of crawler writes."""


def encode_task(task: Task) -> str:
    return _DUMPS(task)


def decode_task(text: str | bytes) -> Task:
    fields = _array(text, "task", len(_TASK_TYPES))
    for index, (value, types) in enumerate(zip(fields, _TASK_TYPES, strict=False)):
        _check(value, types, f"task field {Task._fields[index]}")
    task = Task(*fields)
    auth = task.auth
    if auth is not None:
        if len(auth) != 2 or not all(isinstance(part, str) for part in auth):
            raise MalformedEntry("task field auth: not a (user, password) pair")
        task = task._replace(auth=(auth[0], auth[1]))
    return task


def encode_result(result: Result) -> str:
    return _DUMPS(result)


def decode_result(text: str | bytes) -> Result:
    fields = _array(text, "result", len(_RESULT_TYPES))
    for value, (name, types) in zip(fields, _RESULT_TYPES.items(), strict=False):
        _check(value, types, f"result field {name}")
    result = Result(*fields)
    try:
        outcome = Outcome(result.outcome)
    except ValueError:
        raise MalformedEntry(f"result field outcome: {result.outcome!r} is not one of ok, failed, retry") from None
    if not all(isinstance(link, str) for link in result.links):
        raise MalformedEntry("result field links: not a list of strings")
    return result._replace(outcome=outcome, links=tuple(result.links))


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
        value = _LOADS(text.decode() if isinstance(text, bytes) else text)
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedEntry(f"{what}: not JSON ({error})") from None
    if not isinstance(value, list) or not 3 <= len(value) <= most:
        raise MalformedEntry(f"{what}: not an array of 3 to {most} fields")
    return value


def _check(value: object, types: tuple[type, ...], what: str) -> None:
    # bool is an int to isinstance; a flag where a number belongs (or the reverse) is still wrong.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise MalformedEntry(f"{what}: {type(value).__name__} is not allowed here")
