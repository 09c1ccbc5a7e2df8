"""Declared sizes: refuse a pickled file that declares more memory than it holds, before unpickling it.

A pickle can ask for memory it does not contain (`bytearray(10**12)` through an allowed global, a string or
storage whose declared length exceeds the file). Before anything is unpickled, its opcodes are scanned
(`pickletools.genops`, which executes nothing, through a reader that never returns more than the file holds)
with a small symbolic stack (`_SymbolicStack`, one handler per opcode family); every such size is bounded by
the file's own size (`_check_declared_sizes`).
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError

_SIZED_CALLABLES = {("builtins", "bytearray"), ("builtins", "bytes")}


class _BoundedReader:
    """read(n) / readline() on a binary stream that never allocate more than what is left of it."""

    def __init__(self, stream: Any, size: int) -> None:
        self.stream, self.size = stream, size

    def read(self, n: int = -1) -> bytes:
        left = max(self.size - self.stream.tell(), 0)
        return self.stream.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.stream.readline(max(self.size - self.stream.tell(), 0))

    def tell(self) -> int:
        return self.stream.tell()


class _OversizedDeclaration(Exception):
    pass


_MARK, _UNKNOWN = object(), object()  # a MARK on the symbolic stack; a value the scan does not follow


def _global_name(module: Any, name: Any) -> Any:
    """A pickled global as ("global", module, name), Python 2 names mapped as pickle's find_class does."""
    if not isinstance(module, str) or not isinstance(name, str):
        return _UNKNOWN
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return ("global", _compat_pickle.IMPORT_MAPPING.get(module, module), name)


class _SymbolicStack:
    """The stack and memo of one pickle being scanned. Globals are kept by name, tuples are built, literals
    kept, every other value is `_UNKNOWN`; a call of a sized callable (`_SIZED_CALLABLES`) or a storage
    declaring more than `bound` raises _OversizedDeclaration. Malformed input raises IndexError, TypeError or
    KeyError (the scan then gives up)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.stack: list[Any] = []
        self.memo: dict[Any, Any] = {}

    def step(self, op: Any, arg: Any) -> None:
        """Apply one opcode (any but STOP) to the stack."""
        _OPCODE_FAMILIES.get(op.name, _SymbolicStack.other)(self, op, arg)

    def pop_mark(self) -> list[Any]:
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1 :]
                del stack[i:]
                return items
        raise IndexError("no mark")

    def check_call(self, fn: Any, args: Any) -> None:
        sized = isinstance(fn, tuple) and fn[:1] == ("global",) and fn[1:] in _SIZED_CALLABLES
        if sized and isinstance(args, tuple) and args and isinstance(args[0], int) and not isinstance(args[0], bool):
            if args[0] > self.bound:
                raise _OversizedDeclaration(f"a {args[0]}-byte {fn[2]}")

    def stack_op(self, op: Any, arg: Any) -> None:
        """MARK, DUP, POP, POP_MARK."""
        if op.name == "MARK":
            self.stack.append(_MARK)
        elif op.name == "DUP":
            self.stack.append(self.stack[-1])
        elif op.name == "POP":
            self.stack.pop()
        else:
            self.pop_mark()

    def global_op(self, op: Any, arg: Any) -> None:
        """GLOBAL ("module name" argument), STACK_GLOBAL (module and name on the stack)."""
        if op.name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
        else:
            attr, module = self.stack.pop(), self.stack.pop()
        self.stack.append(_global_name(module, attr))

    def call_op(self, op: Any, arg: Any) -> None:
        """INST, OBJ, REDUCE, NEWOBJ, NEWOBJ_EX: the call is checked, its result unknown."""
        stack = self.stack
        if op.name == "INST":
            module, _, attr = str(arg).partition(" ")
            self.check_call(_global_name(module, attr), tuple(self.pop_mark()))
        elif op.name == "OBJ":
            items = self.pop_mark()
            self.check_call(items[0] if items else _UNKNOWN, tuple(items[1:]))
        elif op.name == "NEWOBJ_EX":
            _, args, fn = stack.pop(), stack.pop(), stack.pop()
            self.check_call(fn, args)
        else:  # REDUCE, NEWOBJ
            args, fn = stack.pop(), stack.pop()
            self.check_call(fn, args)
        stack.append(_UNKNOWN)

    def persistent_id_op(self, op: Any, arg: Any) -> None:
        """BINPERSID. torch: ('storage', storage_type, key, location, numel[, view_metadata]); every element of
        a storage takes at least one byte of the file."""
        pid = self.stack.pop()
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            numel = pid[4]
            if isinstance(numel, int) and numel > self.bound:
                raise _OversizedDeclaration(f"a storage of {numel} elements")
        self.stack.append(_UNKNOWN)

    def tuple_op(self, op: Any, arg: Any) -> None:
        """TUPLE1, TUPLE2, TUPLE3, TUPLE, EMPTY_TUPLE."""
        stack = self.stack
        if op.name == "TUPLE":
            stack.append(tuple(self.pop_mark()))
        elif op.name == "EMPTY_TUPLE":
            stack.append(())
        else:
            n = int(op.name[-1])
            items = stack[-n:]
            if len(items) != n:
                raise IndexError("stack underflow")
            del stack[-n:]
            stack.append(tuple(items))

    def memo_op(self, op: Any, arg: Any) -> None:
        """PUT, BINPUT, LONG_BINPUT, MEMOIZE, GET, BINGET, LONG_BINGET."""
        if op.name == "MEMOIZE":
            self.memo[len(self.memo)] = self.stack[-1]
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            self.stack.append(self.memo.get(arg, _UNKNOWN))
        else:
            self.memo[arg] = self.stack[-1]

    def other(self, op: Any, arg: Any) -> None:
        """Every other opcode: a literal (int, str, bytes, float, ...) is pushed as itself; otherwise what the
        opcode takes is popped (up to its MARK) and what it leaves is unknown."""
        if not op.stack_before and len(op.stack_after) == 1:
            self.stack.append(arg if arg is not None else _UNKNOWN)
            return
        before = op.stack_before
        if pickletools.markobject in before:
            self.pop_mark()
            keep = before.index(pickletools.markobject)
        else:
            keep = len(before)
        if keep:
            if len(self.stack) < keep:
                raise IndexError("stack underflow")
            del self.stack[-keep:]
        self.stack.extend(_UNKNOWN for _ in op.stack_after)


_OPCODE_FAMILIES = {
    **dict.fromkeys(("MARK", "DUP", "POP", "POP_MARK"), _SymbolicStack.stack_op),
    **dict.fromkeys(("GLOBAL", "STACK_GLOBAL"), _SymbolicStack.global_op),
    **dict.fromkeys(("INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"), _SymbolicStack.call_op),
    "BINPERSID": _SymbolicStack.persistent_id_op,
    **dict.fromkeys(("TUPLE1", "TUPLE2", "TUPLE3", "TUPLE", "EMPTY_TUPLE"), _SymbolicStack.tuple_op),
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET"),
                    _SymbolicStack.memo_op),
}


def _scan_pickle(reader: _BoundedReader, bound: int) -> bool:
    """Walk one pickle's opcodes up to STOP; raise _OversizedDeclaration when a size it declares exceeds
    `bound`. -> False when the stream is not a pickle the scan understands (torch.load then decides)."""
    state = _SymbolicStack(bound)
    try:
        for op, arg, _ in pickletools.genops(reader):
            if op.name == "STOP":
                return True
            state.step(op, arg)
    except ValueError as exc:
        text = str(exc)
        if "remain" in text or "sys.maxsize" in text:  # a string/bytes length beyond the end of the file
            found = re.search(r"(\d+)", text)
            raise _OversizedDeclaration(f"a {found.group(1) if found else 'huge'}-byte string") from None
        return False
    except (IndexError, TypeError, KeyError, EOFError):
        return False
    return False


def _check_declared_sizes(path: Path) -> None:
    """Refuse (CheckpointError) a pickled file that declares more memory than it holds (see `_scan_pickle`)."""
    size = path.stat().st_size
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
                big = [i for i in infos if i.file_size > size]
                if big:
                    raise _OversizedDeclaration(f"a {big[0].file_size}-byte entry {big[0].filename!r} (a zip bomb?)")
                for info in infos:
                    if info.filename.endswith(".pkl"):
                        data = archive.read(info)
                        stream = io.BytesIO(data)
                        _scan_pickle(_BoundedReader(stream, len(data)), size)
        else:
            with open(path, "rb") as handle:
                reader = _BoundedReader(handle, size)
                for _ in range(5):  # legacy format: magic, protocol, sys_info, the object, storage keys
                    if not _scan_pickle(reader, size):
                        break
    except _OversizedDeclaration as exc:
        raise CheckpointError(
            f"refusing to load {path}: it declares {exc}, more than the file's {size} bytes hold"
        ) from None
    except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError):
        return  # unreadable: torch.load reports it
