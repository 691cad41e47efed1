"""``SealedTrail``: a finished trail, serialised once and read-only from then on.

The flush pipeline seals each trail once, after masking, limits, sampling and the integrity stamp: the compact JSON
of the trail (``.data``) is what every exporter writes, what an integrity hash covers and what a test sees. The
mapping view of a sealed trail is decoded from that JSON, so it always shows exactly what went out; it and every
value nested in it are read-only (changing any of them raises ``TypeError``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, overload

import orjson

from ._json import valid_unicode

__all__ = ["FrozenDict", "FrozenList", "SealedTrail", "seal"]


_set = object.__setattr__


def _read_only(*args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError("a sealed trail is read-only")


def _frozen(value: Any) -> Any:
    if type(value) is dict:
        return FrozenDict(value)
    if type(value) is list:
        return FrozenList(value)
    return value


class FrozenDict(Mapping[str, Any]):
    """A read-only view of a JSON object inside a sealed trail."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, Any]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return _frozen(self._items[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenDict):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == {k: _thawed(v) for k, v in other.items()}
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FrozenDict({self._items!r})"

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _read_only


class FrozenList(Sequence[Any]):
    """A read-only view of a JSON array inside a sealed trail."""

    __slots__ = ("_items",)

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> FrozenList: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return FrozenList(self._items[index])
        return _frozen(self._items[index])

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenList):
            return self._items == other._items
        if isinstance(other, (list, tuple)):
            return self._items == [_thawed(v) for v in other]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FrozenList({self._items!r})"

    __setitem__ = __delitem__ = __iadd__ = append = extend = insert = pop = remove = clear = sort = reverse = _read_only


def _thawed(value: Any) -> Any:
    if isinstance(value, (FrozenDict, FrozenList)):
        return value._items
    return value


class SealedTrail(Mapping[str, Any]):
    """One finished trail (or another record, such as an integrity checkpoint), exactly as it is exported.

    ``data`` is the compact JSON of the record (UTF-8, no trailing newline), serialised once when the trail was
    sealed: file and stdout exporters write ``data + b"\\n"``, integrity hashes cover ``data``. As a mapping, a sealed
    trail shows the same document decoded from ``data`` (decoded on first access); nothing in it can be changed.
    :meth:`to_dict` returns a fresh, plain, mutable copy.
    """

    __slots__ = ("_document", "data")

    data: bytes
    _document: dict[str, Any] | None

    def __init__(self, data: bytes) -> None:
        if type(data) is not bytes:
            raise TypeError("SealedTrail data must be bytes (the compact JSON of the trail)")
        _set(self, "data", data)
        _set(self, "_document", None)

    def _doc(self) -> dict[str, Any]:
        document = self._document
        if document is None:
            decoded = orjson.loads(self.data)
            if not isinstance(decoded, dict):
                raise TypeError("a sealed trail holds a JSON object")
            _set(self, "_document", decoded)
            document = decoded
        return document

    def __getitem__(self, key: str) -> Any:
        return _frozen(self._doc()[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._doc())

    def __len__(self) -> int:
        return len(self._doc())

    def __contains__(self, key: object) -> bool:
        return key in self._doc()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SealedTrail):
            return self.data == other.data or self._doc() == other._doc()
        if isinstance(other, Mapping):
            return self._doc() == {k: _thawed(v) for k, v in other.items()}
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("a sealed trail is read-only")

    def __repr__(self) -> str:
        size = len(self.data)
        return f"<SealedTrail {size} bytes>"

    def to_dict(self) -> dict[str, Any]:
        """A fresh, plain, mutable copy of the document."""
        document: dict[str, Any] = orjson.loads(self.data)
        return document

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _read_only


def seal(document: Mapping[str, Any]) -> SealedTrail:
    """Serialise ``document`` (JSON types only) once and return it sealed (a string that is not valid Unicode, a
    lone surrogate, has it replaced by U+FFFD in ``document``, which must then be a dict)."""
    try:
        return SealedTrail(orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS))
    except orjson.JSONEncodeError:
        valid_unicode(document)
        return SealedTrail(orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS))
