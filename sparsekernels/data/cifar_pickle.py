"""A reader for the pickles CIFAR ships its batches in that runs no pickle
machine and builds no numpy object from the file.

Why not ``pickle.Unpickler`` with an allow-list of globals: the machine itself
lets a few bytes claim gigabytes (``LONG_BINPUT 2**31`` sizes the memo table to
match), numpy's reconstruction allocates whatever shape it is told, and one
memoised string can be encoded a thousand times over. Here only the opcodes a
batch uses are interpreted, their number is bounded, every object is built
from bytes that are in the file, the only calls are stand-ins for the globals a
batch names, and an array is an :class:`ArrayRecord` (shape, dtype, raw bytes)
that is checked before any array exists.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

_MAX_LINE = 64  # GLOBAL and INT arguments are short text lines
_MAX_NDIM = 64  # numpy's own limit; bounds the cost of multiplying the sizes


class MalformedPickle(ValueError):
    """The bytes are not a pickle of the kind a CIFAR batch is."""


@dataclass
class DtypeRecord:
    """What ``numpy.dtype(spec, ...)`` named, e.g. 'u1'."""

    spec: str

    def build(self, state: Any) -> None:
        # The state holds the byte order and field layout: moot for the one-byte
        # type a batch uses, and any other spec is refused by uint8_array.
        if not isinstance(state, tuple):
            raise MalformedPickle(f"dtype state is a {_type(state)}, expected a tuple")


@dataclass
class ArrayRecord:
    """A numpy array as pickled: shape, dtype, memory order and the raw bytes."""

    shape: Any = None
    dtype: Any = None
    fortran: Any = False
    raw: Any = None

    def build(self, state: Any) -> None:
        if self.raw is not None:
            raise MalformedPickle("an array's state is set twice")
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise MalformedPickle("array state is not (1, shape, dtype, is_fortran, data)")
        _, self.shape, self.dtype, self.fortran, self.raw = state

    def uint8_array(self) -> np.ndarray:
        """The array as a read-only view of the file's bytes. MalformedPickle
        unless it is a complete uint8 array whose shape matches those bytes."""
        if not (isinstance(self.dtype, DtypeRecord) and self.dtype.spec == "u1"):
            found = repr(self.dtype.spec) if isinstance(self.dtype, DtypeRecord) else describe(
                self.dtype)
            raise MalformedPickle(f"dtype {found}, expected uint8 ('u1')")
        if not isinstance(self.raw, bytes):
            raise MalformedPickle(f"array data is a {_type(self.raw)}, expected bytes")
        if not isinstance(self.shape, tuple) or len(self.shape) > _MAX_NDIM or not all(
                type(d) is int and d >= 0 for d in self.shape):
            raise MalformedPickle(f"array shape {describe(self.shape)} is not a tuple of "
                                  f"at most {_MAX_NDIM} sizes")
        if self.fortran not in (0, 1):
            raise MalformedPickle(f"array order flag {describe(self.fortran)} is not a bool")
        needed = math.prod(self.shape)  # exact, never overflows
        if needed != len(self.raw):
            raise MalformedPickle(f"array shape {self.shape} needs {needed} bytes "
                                  f"but the file holds {len(self.raw)}")
        order = "F" if self.fortran else "C"
        return np.frombuffer(self.raw, np.uint8).reshape(self.shape, order=order)


def _type(value: Any) -> str:
    return type(value).__name__


def describe(value: Any) -> str:
    """A short description of an untrusted value for an error message: the repr
    of a scalar or of a short tuple of numbers, else its type (the repr of a
    deeply nested list would exhaust the recursion limit)."""
    if isinstance(value, (str, bytes)):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, (int, float, type(None))):
        return repr(value)
    if isinstance(value, tuple) and len(value) <= 8 and all(
            isinstance(v, (int, float)) for v in value):
        return repr(value)
    return f"a {_type(value)}" + (f" of {len(value)}" if isinstance(value, tuple) else "")


@dataclass(frozen=True)
class _Global:
    """A global a batch refers to; ``call`` stands in for calling it (None: not callable)."""

    name: str
    call: Optional[Callable[["_Machine", tuple], Any]]


def _reconstruct(machine: "_Machine", args: tuple) -> ArrayRecord:
    if len(args) != 3 or args[0] is not _NDARRAY:
        raise MalformedPickle("_reconstruct is called with other than (ndarray, shape, typecode)")
    return ArrayRecord()  # BUILD fills it in


def _frombuffer(machine: "_Machine", args: tuple) -> ArrayRecord:
    if len(args) != 4 or args[3] not in ("C", "F"):
        raise MalformedPickle("_frombuffer is called with other than (data, dtype, shape, order)")
    buffer, dtype, shape, order = args
    return ArrayRecord(shape, dtype, order == "F", buffer)


def _dtype(machine: "_Machine", args: tuple) -> DtypeRecord:
    spec = args[0] if args else None
    if isinstance(spec, bytes):  # Python 2 pickles name it with a byte string
        spec = spec.decode("latin-1")
    if not isinstance(spec, str) or len(spec) > _MAX_LINE:
        raise MalformedPickle(f"dtype is called with {describe(spec)}, expected a type code")
    return DtypeRecord(spec)


def _encode(machine: "_Machine", args: tuple) -> bytes:
    # How protocol 2 pickles bytes: _codecs.encode(text, 'latin1').
    if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
        raise MalformedPickle("_codecs.encode is called with other than (text, 'latin1')")
    machine.encoded_chars += len(args[0])
    if machine.encoded_chars > len(machine.raw):  # a memoised text encoded again and again
        raise MalformedPickle("encodes more text than the file holds")
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError:
        raise MalformedPickle("encodes text that is not latin-1") from None


_NDARRAY = _Global("numpy.ndarray", None)
_GLOBALS: Dict[tuple, _Global] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Global("numpy.dtype", _dtype),
    ("_codecs", "encode"): _Global("_codecs.encode", _encode),
    # numpy 1.x and 2.x names; _frombuffer is how protocol 5 pickles an array
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _Global("_reconstruct", _reconstruct)
       for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _Global("_frombuffer", _frombuffer)
       for core in ("core", "_core")},
}


class _Machine:
    """The state of reading one pickle: position, stack, marks, memo."""

    def __init__(self, raw: bytes):
        self.raw = raw
        self.pos = 0
        self.stack: List[Any] = []
        self.marks: List[List[Any]] = []  # the stacks saved by MARK
        self.memo: Dict[int, Any] = {}  # a dict: a huge index costs no more than a small one
        self.encoded_chars = 0

    def take(self, n: int) -> bytes:
        if n > len(self.raw) - self.pos:
            raise MalformedPickle(f"truncated: {n} bytes needed at byte {self.pos} "
                                  f"of {len(self.raw)}")
        chunk = self.raw[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def line(self) -> str:
        end = self.raw.find(b"\n", self.pos, self.pos + _MAX_LINE + 1)
        if end < 0:
            raise MalformedPickle(f"no short text line at byte {self.pos}")
        return self.take(end + 1 - self.pos)[:-1].decode("ascii", "replace")

    def text(self, n: int) -> str:
        try:
            return self.take(n).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise MalformedPickle(f"invalid UTF-8 text before byte {self.pos}") from None

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def pop(self) -> Any:
        if not self.stack:
            raise MalformedPickle(f"pops an empty stack at byte {self.pos}")
        return self.stack.pop()

    def top(self, kind: type) -> Any:
        if not self.stack or not isinstance(self.stack[-1], kind):
            raise MalformedPickle(f"expected a {kind.__name__} on the stack at byte {self.pos}")
        return self.stack[-1]

    def pop_mark(self) -> List[Any]:
        if not self.marks:
            raise MalformedPickle(f"no MARK to pop to at byte {self.pos}")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def mark(self) -> None:
        self.marks.append(self.stack)
        self.stack = []

    def append(self) -> None:
        value = self.pop()
        self.top(list).append(value)

    def extend(self) -> None:
        items = self.pop_mark()
        self.top(list).extend(items)

    def set_item(self) -> None:
        value = self.pop()
        self._set_pairs([self.pop(), value])

    def set_items(self) -> None:
        self._set_pairs(self.pop_mark())

    def _set_pairs(self, items: List[Any]) -> None:
        target = self.top(dict)
        if len(items) % 2:
            raise MalformedPickle(f"an odd number of dict items at byte {self.pos}")
        for key, value in zip(items[::2], items[1::2]):
            if not isinstance(key, (bytes, str, int)):
                raise MalformedPickle(f"a dict key is a {_type(key)}")
            target[key] = value

    def memo_get(self, index: int) -> None:
        if index not in self.memo:
            raise MalformedPickle(f"memo entry {index} is used before it is set")
        self.push(self.memo[index])

    def find_global(self, module: Any, name: Any) -> None:
        named = isinstance(module, str) and isinstance(name, str)
        found = _GLOBALS.get((module, name)) if named else None
        if found is None:
            what = (f"{module[:_MAX_LINE]}.{name[:_MAX_LINE]}" if named
                    else "a global not named by text")
            raise MalformedPickle(f"refers to {what}, which a CIFAR batch never does")
        self.push(found)

    def stack_global(self) -> None:
        name = self.pop()
        self.find_global(self.pop(), name)

    def reduce(self) -> None:
        args, func = self.pop(), self.pop()
        if not isinstance(func, _Global) or func.call is None or not isinstance(args, tuple):
            name = func.name if isinstance(func, _Global) else f"a {_type(func)}"
            raise MalformedPickle(f"calls {name}, which a CIFAR batch never does")
        self.push(func.call(self, args))

    def build(self) -> None:
        state = self.pop()
        if not self.stack or not isinstance(self.stack[-1], (ArrayRecord, DtypeRecord)):
            raise MalformedPickle(f"sets the state of a non-array at byte {self.pos}")
        self.stack[-1].build(state)


def _int_line(m: _Machine) -> None:
    text = m.line()  # protocol 1 writes False / True as "00" / "01"
    value = {"00": False, "01": True}.get(text)
    if value is None:
        if not re.fullmatch(r"-?[0-9]{1,19}", text):
            raise MalformedPickle(f"INT {text!r} is not a small decimal")
        value = int(text)
    m.push(value)


def _tuple_of(n: int) -> Callable[[_Machine], None]:
    def pop_tuple(m: _Machine) -> None:
        items = [m.pop() for _ in range(n)]
        m.push(tuple(reversed(items)))
    return pop_tuple


def _push_bytes(size_bytes: int) -> Callable[[_Machine], None]:
    return lambda m: m.push(m.take(m.uint(size_bytes)))


def _push_text(size_bytes: int) -> Callable[[_Machine], None]:
    return lambda m: m.push(m.text(m.uint(size_bytes)))


def _memoize(m: _Machine, index: int) -> None:
    if not m.stack:
        raise MalformedPickle(f"memoises an empty stack at byte {m.pos}")
    m.memo[index] = m.stack[-1]


def _proto(m: _Machine) -> None:
    if m.uint(1) > 5:
        raise MalformedPickle("pickle protocol above 5")


# The opcodes of protocols 1 to 5 that a batch of dicts, lists, bytes, text,
# numbers and numpy arrays uses (see pickletools for their meaning).
_OPCODES: Dict[int, Callable[[_Machine], None]] = {
    0x80: _proto,                                       # PROTO
    0x95: lambda m: m.take(8),                          # FRAME: a read-ahead hint
    ord("("): _Machine.mark,                            # MARK
    ord("N"): lambda m: m.push(None),                   # NONE
    0x88: lambda m: m.push(True),                       # NEWTRUE
    0x89: lambda m: m.push(False),                      # NEWFALSE
    ord("I"): _int_line,                                # INT
    ord("J"): lambda m: m.push(int.from_bytes(m.take(4), "little", signed=True)),  # BININT
    ord("K"): lambda m: m.push(m.uint(1)),              # BININT1
    ord("M"): lambda m: m.push(m.uint(2)),              # BININT2
    ord("G"): lambda m: m.push(struct.unpack(">d", m.take(8))[0]),  # BINFLOAT
    ord("U"): _push_bytes(1),                           # SHORT_BINSTRING (Python 2 str)
    ord("T"): _push_bytes(4),                           # BINSTRING (Python 2 str)
    ord("C"): _push_bytes(1),                           # SHORT_BINBYTES
    ord("B"): _push_bytes(4),                           # BINBYTES
    0x8E: _push_bytes(8),                               # BINBYTES8
    0x96: _push_bytes(8),                               # BYTEARRAY8, read as bytes
    0x8C: _push_text(1),                                # SHORT_BINUNICODE
    ord("X"): _push_text(4),                            # BINUNICODE
    0x8D: _push_text(8),                                # BINUNICODE8
    ord("}"): lambda m: m.push({}),                     # EMPTY_DICT
    ord("]"): lambda m: m.push([]),                     # EMPTY_LIST
    ord(")"): lambda m: m.push(()),                     # EMPTY_TUPLE
    ord("t"): lambda m: m.push(tuple(m.pop_mark())),    # TUPLE
    0x85: _tuple_of(1),                                 # TUPLE1
    0x86: _tuple_of(2),                                 # TUPLE2
    0x87: _tuple_of(3),                                 # TUPLE3
    ord("a"): _Machine.append,                          # APPEND
    ord("e"): _Machine.extend,                          # APPENDS
    ord("s"): _Machine.set_item,                        # SETITEM
    ord("u"): _Machine.set_items,                       # SETITEMS
    ord("q"): lambda m: _memoize(m, m.uint(1)),         # BINPUT
    ord("r"): lambda m: _memoize(m, m.uint(4)),         # LONG_BINPUT
    0x94: lambda m: _memoize(m, len(m.memo)),           # MEMOIZE
    ord("h"): lambda m: m.memo_get(m.uint(1)),          # BINGET
    ord("j"): lambda m: m.memo_get(m.uint(4)),          # LONG_BINGET
    ord("c"): lambda m: m.find_global(m.line(), m.line()),  # GLOBAL
    0x93: _Machine.stack_global,                        # STACK_GLOBAL
    ord("R"): _Machine.reduce,                          # REDUCE
    ord("b"): _Machine.build,                           # BUILD
}
_STOP = ord(".")


def load_batch_pickle(raw: bytes, max_opcodes: int) -> Any:
    """The object pickled in ``raw``, which must end right after its STOP,
    with arrays as :class:`ArrayRecord`. MalformedPickle for anything a CIFAR
    batch does not contain, or for more than ``max_opcodes`` opcodes."""
    machine = _Machine(raw)
    for _ in range(max_opcodes):
        at = machine.pos
        code = machine.uint(1)
        if code == _STOP:
            result = machine.pop()
            if machine.pos != len(raw):
                raise MalformedPickle(f"{len(raw) - machine.pos} bytes of junk follow the pickle")
            return result
        if code not in _OPCODES:
            raise MalformedPickle(f"opcode 0x{code:02x} at byte {at}, "
                                  "which a CIFAR batch never uses")
        _OPCODES[code](machine)
    raise MalformedPickle(f"more than {max_opcodes} opcodes, more than a CIFAR batch needs")
