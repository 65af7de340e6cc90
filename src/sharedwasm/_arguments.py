"""Arguments: a run's values checked against its entry's parameters and stored for the workers.

Each parameter after `(start, end)` has one 8-byte slot in the control block
(`Control.ARGUMENTS`). A `Binder` is made once per pool and entry: it turns
every parameter into a setter that checks one value and stores it through a
ctypes object fixed at the slot's address, so a call does no lookups of
types, names or addresses beyond what the value itself needs.

An array argument becomes its byte address in the memory:

* an array of this pool's heap (`WorkerPool.empty`, `asarray`, ...) is passed
  as it is, with no copy; it must be C-contiguous and in a live block;
* an ordinary numpy array is copied into a temporary block for the run and,
  unless the parameter is a pointer to const, copied back after it (with one
  `CopyWarning` per pool saying so);
* an array of another memory, or of this memory outside a live block (freed,
  or a view of the board or of `pool.data()`), is refused.

The slots are written with plain stores by the thread that publishes the
run; the publish's seq-cst bump of GENERATION orders them before every read
by a worker that has seen the new generation.
"""

from __future__ import annotations

import ctypes
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from ._entries import Entry, Param
from ._errors import LayoutError, describe
from ._heap import Arrays, Block
from ._layout import ARGUMENT_SLOTS, Layout
from ._memory import Memory

_F32_MAX = float(np.finfo(np.float32).max)
_WASM_RANGES = {"i32": (-(2**31), 2**32 - 1), "i64": (-(2**63), 2**64 - 1)}
_MASKS = {"i32": 0xFFFFFFFF, "i64": 0xFFFFFFFFFFFFFFFF}

Allocate = Callable[[tuple[int, ...], np.dtype[Any]], npt.NDArray[Any]]
"""Makes a temporary array in the heap, growing the memory if it must."""


class Copy:
    """An ordinary array copied in for one run; `back` if it is copied out after."""

    __slots__ = ("back", "original", "temporary")

    def __init__(self, original: npt.NDArray[Any], temporary: npt.NDArray[Any], back: bool) -> None:
        self.original = original
        self.temporary = temporary
        self.back = back

    def finish(self) -> None:
        if self.back:
            self.original[...] = self.temporary


class Slots:
    """ctypes objects at a pool's argument slots, one per slot and kind of value."""

    def __init__(self, memory: Memory, layout: Layout) -> None:
        base = memory._base
        addresses = [base + layout.argument_address(j) for j in range(ARGUMENT_SLOTS)]
        self.i32 = [ctypes.c_uint32.from_address(a) for a in addresses]
        self.i64 = [ctypes.c_uint64.from_address(a) for a in addresses]
        self.f32 = [ctypes.c_float.from_address(a) for a in addresses]
        self.f64 = [ctypes.c_double.from_address(a) for a in addresses]
        # The ctypes objects point into the memory; keep it alive with them.
        self._memory = memory


class Binder:
    """Checks and stores the arguments of one entry on one pool."""

    def __init__(
        self,
        entry: Entry,
        slots: Slots,
        arrays: Arrays,
        allocate: Allocate,
        warn_copy: Callable[[int], None],
    ) -> None:
        self.entry = entry
        self._arrays = arrays
        self._allocate = allocate
        self._warn_copy = warn_copy
        self._setters = [self._setter(j, p, slots) for j, p in enumerate(entry.params)]
        self._count = len(entry.params)
        self._store = _unrolled(entry, self._setters)
        self._names = {p.name: j for j, p in enumerate(entry.params)} if entry.typed else {}

    def _fail(self, param: Param, error: type[Exception], what: str) -> Exception:
        return error(f"{self.entry.name}: argument {param.name!r} ({param}) {what}")

    def _setter(self, j: int, p: Param, slots: Slots) -> Callable[[object, list[Copy]], int | None]:
        if p.pointer:
            return self._pointer_setter(p, slots.i32[j])
        if p.ctype is None and p.wasm_type == "i32":
            # Untyped: an address or a number, the wasm types cannot say which.
            as_pointer = self._pointer_setter(p, slots.i32[j])
            as_int = self._int_setter(p, slots.i32[j])

            def set_either(value: object, copies: list[Copy]) -> int | None:
                if isinstance(value, np.ndarray):
                    return as_pointer(value, copies)
                as_int(value, copies)
                return None

            return set_either
        if p.wasm_type in ("f32", "f64"):
            return self._float_setter(p, slots.f32[j] if p.wasm_type == "f32" else slots.f64[j])
        return self._int_setter(p, slots.i32[j] if p.wasm_type == "i32" else slots.i64[j])

    def _int_setter(
        self, p: Param, slot: ctypes.c_uint32 | ctypes.c_uint64
    ) -> Callable[[object, list[Copy]], None]:
        if p.dtype is not None:
            if p.dtype == np.bool_:
                low, high = 0, 1
            else:
                info = np.iinfo(p.dtype)  # type: ignore[type-var]
                low, high = int(info.min), int(info.max)
        else:
            low, high = _WASM_RANGES[p.wasm_type]
        mask = _MASKS[p.wasm_type]
        accepts_bool = p.dtype is not None and p.dtype == np.bool_
        fail = self._fail

        def set_int(value: object, copies: list[Copy]) -> None:
            if type(value) is not int:
                if (isinstance(value, bool | np.bool_) and not accepts_bool) or not isinstance(
                    value, int | np.integer | np.bool_
                ):
                    what = (
                        "an int or a numpy array"
                        if p.ctype is None and p.wasm_type == "i32"
                        else "an int"
                    )
                    raise fail(p, TypeError, f"must be {what} (got {describe(value)})")
                value = operator.index(value)  # type: ignore[arg-type]
            if not low <= value <= high:
                raise fail(p, OverflowError, f"must be in [{low}, {high}] (got {value!r})")
            slot.value = value & mask

        return set_int

    def _float_setter(
        self, p: Param, slot: ctypes.c_float | ctypes.c_double
    ) -> Callable[[object, list[Copy]], None]:
        single = p.wasm_type == "f32"
        fail = self._fail

        def set_float(value: object, copies: list[Copy]) -> None:
            if type(value) is float:
                if -_F32_MAX <= value <= _F32_MAX or not single:  # the common case
                    slot.value = value
                    return
            else:
                if isinstance(value, bool | np.bool_) or not isinstance(
                    value, int | float | np.integer | np.floating
                ):
                    raise fail(p, TypeError, f"must be a real number (got {describe(value)})")
                try:
                    value = float(value)
                except OverflowError:
                    raise fail(
                        p, OverflowError, f"must fit a float64 (got {describe(value)})"
                    ) from None
            if single and abs(value) > _F32_MAX and math.isfinite(value):
                raise fail(
                    p, OverflowError, f"must fit a float32, at most {_F32_MAX:g} (got {value!r})"
                )
            slot.value = value

        return set_float

    def _pointer_setter(
        self, p: Param, slot: ctypes.c_uint32
    ) -> Callable[[object, list[Copy]], int]:
        arrays, fail = self._arrays, self._fail
        known = arrays.known
        dtype, const = p.dtype, p.const

        def set_pointer(value: Any, copies: list[Copy]) -> int:
            hit = known.get(id(value))
            if hit is not None and hit[0]() is value:
                # An array the heap handed out: an ndarray in a block of ours.
                block: Block = hit[1]
                address: int = hit[2]
                if not block.live:
                    raise fail(p, ValueError, "was freed with pool.free")
                check(cast("npt.NDArray[Any]", value))
            else:
                if not isinstance(value, np.ndarray):
                    raise fail(p, TypeError, f"must be a numpy array (got {describe(value)})")
                check(value)
                try:
                    found, address = arrays.locate(value)
                except ValueError as exc:
                    raise fail(p, ValueError, str(exc)) from None
                if found is None:
                    slot.value = self._copy_in(p, value, copies)
                    return len(value) if value.ndim else 1
                block = found
            if block.fill is not None:
                refill(block)
            slot.value = address
            return len(value) if value.ndim else 1

        def check(value: npt.NDArray[Any]) -> None:
            found = value.dtype
            if dtype is not None and found is not dtype and found != dtype:
                raise fail(p, TypeError, f"must be a {dtype} array (got {describe(value)})")
            if not const and not value.flags.writeable:
                raise fail(
                    p,
                    ValueError,
                    "must be writable: the kernel may write through a pointer that is not "
                    "const (got a read-only array)",
                )

        return set_pointer

    def _copy_in(self, p: Param, value: npt.NDArray[Any], copies: list[Copy]) -> int:
        try:
            temporary = self._allocate(value.shape, value.dtype)
        except LayoutError as exc:
            raise self._fail(p, ValueError, f"cannot be copied in: {exc}") from exc
        temporary[...] = value
        copies.append(Copy(value, temporary, back=not p.const))
        self._warn_copy(value.nbytes)
        return int(temporary.__array_interface__["data"][0]) - self._arrays.memory._base

    def bind(
        self, args: Sequence[object], kwargs: Mapping[str, object]
    ) -> tuple[int | None, list[Copy]]:
        """Check and store the arguments; return the first array's length and the copies made.

        Raises:
            TypeError: a wrong count, an unknown or repeated name, a wrong type.
            ValueError, OverflowError: a value out of range, or an array that
                cannot be passed.
        """
        if kwargs:
            args = self._order(args, kwargs)
        if len(args) != self._count:
            raise TypeError(
                f"{self.entry.name} takes {self._count} argument(s) after run_id "
                f"({self.entry}) (got {len(args)})"
            )
        copies: list[Copy] = []
        if not self._count:
            return None, copies
        try:
            return self._store(args, copies), copies
        except BaseException:
            release(copies)
            raise

    def _order(self, args: Sequence[object], kwargs: Mapping[str, object]) -> list[object]:
        entry = self.entry
        if not self._names:
            raise TypeError(
                f"{entry.name} takes its arguments by position only: the module does not record "
                f"its parameter names (got keyword(s) {', '.join(sorted(kwargs))})"
            )
        ordered: list[object] = list(args)
        missing = object()
        ordered.extend([missing] * (self._count - len(args)))
        for name, value in kwargs.items():
            j = self._names.get(name)
            if j is None:
                raise TypeError(
                    f"{entry.name} has no parameter {name!r} ({entry}); keyword arguments "
                    "must name one"
                )
            if j < len(args):
                raise TypeError(f"{entry.name} got parameter {name!r} both by position and by name")
            ordered[j] = value
        absent = [entry.params[j].name for j, v in enumerate(ordered) if v is missing]
        if absent:
            raise TypeError(f"{entry.name} is missing argument(s) {absent} ({entry})")
        return ordered


Store = Callable[[Sequence[object], list[Copy]], "int | None"]


def _unrolled(entry: Entry, setters: list[Callable[[object, list[Copy]], int | None]]) -> Store:
    """Return one function that calls every parameter's setter in turn, unrolled.

    Made once per entry (as attrs writes an `__init__` per class): a loop
    over the setters would cost more per call than most setters themselves.
    It returns the length of the first array argument, the run's default
    element count.
    """
    lines = ["def store(args, copies):", "    first = None"]
    for j, param in enumerate(entry.params):
        if param.pointer or (param.ctype is None and param.wasm_type == "i32"):
            lines.append(f"    length = s{j}(args[{j}], copies)")
            lines.append("    if first is None:")
            lines.append("        first = length")
        else:
            lines.append(f"    s{j}(args[{j}], copies)")
    lines.append("    return first")
    namespace: dict[str, Any] = {f"s{j}": setter for j, setter in enumerate(setters)}
    code = compile("\n".join(lines), f"<sharedwasm arguments of {entry.name}>", "exec")
    exec(code, namespace)
    store: Store = namespace["store"]
    return store


def refill(block: Block) -> None:
    """Write a partials block's fill value over all of it (see `WorkerPool.partials`)."""
    owner = block.owner() if block.owner is not None else None
    if owner is not None and block.fill is not None:
        dtype, value = block.fill
        owner.view(dtype)[...] = value


def release(copies: list[Copy]) -> None:
    """Drop the temporary arrays of a run (their blocks return to the heap)."""
    copies.clear()
