"""Fields and serialisation shared by the typed records (records.py): validators that turn a bad value into a
RecordError naming the field, and `Record`, the JSON (de)serialisation base.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import re
from typing import Any, Mapping, Sequence

from aira_jax.discovery.status import RecordError

# Names end up in file paths (gallery export) and prompts, so keep them to a safe alphabet.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def validate_name(name: Any, what: str = "design name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RecordError(
            f"invalid {what} {name!r}: use 1-128 characters from [A-Za-z0-9_.-], starting with a letter or digit")
    return name


# ----------------------------------------------------------------------------------------------- validators
def as_str(value: Any, field: str, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{field} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RecordError(f"{field} must not be empty")
    return value


def opt_float(value: Any, field: str, *, nonneg: bool = False) -> float | None:
    """None means 'not measured'; NaN/inf are kept (a diverged run) and handled by fitness."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:  # numpy scalars
            value = float(value)
        except (TypeError, ValueError):
            raise RecordError(f"{field} must be a number or None, got {value!r}") from None
    value = float(value)
    if nonneg and value < 0:
        raise RecordError(f"{field} must be >= 0, got {value}")
    return value


def opt_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__"):
            value = value.__index__()
        else:
            raise RecordError(f"{field} must be an integer or None, got {value!r}")
    if value < 0:
        raise RecordError(f"{field} must be >= 0, got {value}")
    return int(value)


def json_dict(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError(f"{field} must be a mapping, got {type(value).__name__}")
    value = dict(value)
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise RecordError(f"{field} must be JSON-serialisable: {e}") from None
    return value


def float_dict(value: Any, field: str) -> dict[str, float | None]:
    """A name -> number mapping (numpy scalars accepted); values become Python floats."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError(f"{field} must be a mapping, got {type(value).__name__}")
    return {str(k): opt_float(v, f"{field}[{k!r}]") for k, v in value.items()}


def names(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise RecordError(f"{field} must be a list of names, got {value!r}")
    names = tuple(validate_name(v, f"name in {field}") for v in value)
    if len(set(names)) != len(names):
        raise RecordError(f"{field} has duplicates: {list(names)}")
    return names


def set_field(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses normalise their own fields in __post_init__


class Record:
    """JSON (de)serialisation shared by the records; NaN survives as Python's json writes it."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, enum.Enum):
                v = v.value
            elif isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else (x.to_dict() if isinstance(x, Record) else x) for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise RecordError(f"{cls.__name__} has no fields {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True, sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))
