"""Model file formats, checked from their structure without loading them.

Truncation shows at a file's end, so each check reads what the format puts
there: the zip end-of-central-directory record (PyTorch archives,
TorchScript), the pickles and raw storages of a legacy ``torch.save``, the
data size a safetensors header implies, the protobuf field boundaries of
ONNX, and the tensor table of GGUF.
"""

from __future__ import annotations

import json
import os
import pickletools
import struct
from collections.abc import Callable
from typing import BinaryIO

from plugwarden.exceptions import CorruptFile

__all__ = ["check_format"]


def check_format(handle: BinaryIO, size: int, suffix: str) -> None:
    """Raise :class:`CorruptFile` if the file in ``handle`` is not whole."""
    head = handle.read(16)
    checker = _by_magic(head) or _BY_SUFFIX.get(suffix)
    if checker is not None:
        checker(handle, size, head)


_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_EOCD = b"PK\x05\x06"
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_SAFETENSORS_MAX_HEADER = 100 * 2**20


def _by_magic(head: bytes) -> Callable[[BinaryIO, int, bytes], None] | None:
    if head.startswith(_ZIP_LOCAL):
        return _check_zip
    if head.startswith(b"GGUF"):
        return _check_gguf
    return None


def _check_zip(handle: BinaryIO, size: int, head: bytes) -> None:
    """The end-of-central-directory record must be there and consistent."""
    tail_size = min(size, 65536 + 22)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(_ZIP_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise CorruptFile("zip end-of-central-directory record missing")
    # disk, disk of the directory, entries here, entries, directory size, offset
    _, _, _, entries, directory_size, directory_offset = struct.unpack_from("<HHHHII", tail, at + 4)
    if directory_offset == 0xFFFFFFFF or directory_size == 0xFFFFFFFF:
        return  # zip64: the 32-bit record defers to the zip64 one; presence suffices
    eocd_position = size - tail_size + at
    if directory_offset + directory_size > eocd_position or entries == 0:
        raise CorruptFile("zip central directory does not fit the file")


# Bytes per element of the storages a legacy torch.save file names.
_STORAGE_SIZES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
}


def _walk_pickle(handle: BinaryIO) -> list[tuple[str, object]]:
    """One pickle's opcodes, read without executing anything."""
    try:
        return [(op.name, arg) for op, arg, _ in pickletools.genops(handle)]
    except ValueError as exc:
        raise CorruptFile(f"pickle cut short ({exc})") from exc


def _check_pickle(handle: BinaryIO, size: int, head: bytes) -> None:
    """A plain pickle must end with its STOP; a legacy torch.save file is five
    pickles then raw storages, whose sizes must add up to the file's."""
    if len(head) < 2 or head[0] != 0x80 or head[1] > 5:
        raise CorruptFile("not a pickle (no protocol header)")
    handle.seek(0)
    first = _walk_pickle(handle)
    if first[0] != ("PROTO", 2) or len(first) < 2 or first[1][0] != "LONG1":
        if handle.tell() != size:
            raise CorruptFile(f"pickle ends at byte {handle.tell()}, file has {size}")
        return
    if first[1][1] != _LEGACY_TORCH_MAGIC:
        raise CorruptFile("legacy torch file with a wrong magic number")
    _walk_pickle(handle)  # protocol version
    _walk_pickle(handle)  # system info
    sizes = _legacy_storage_sizes(_walk_pickle(handle))
    keys = [arg for name, arg in _walk_pickle(handle) if "UNICODE" in name]
    for key in keys:
        count_bytes = handle.read(8)
        if len(count_bytes) != 8:
            raise CorruptFile(f"storage {key} missing")
        (count,) = struct.unpack("<q", count_bytes)
        handle.seek(count * sizes.get(str(key), 1), os.SEEK_CUR)
    if handle.tell() != size:
        raise CorruptFile(f"legacy torch storages end at byte {handle.tell()}, file has {size}")


def _legacy_storage_sizes(opcodes: list[tuple[str, object]]) -> dict[str, int]:
    """Storage key -> element size, from the persistent ids of the object pickle:
    ('storage', torch.XStorage, key, location, size)."""
    sizes, pending = {}, None
    for name, arg in opcodes:
        if name == "GLOBAL" and isinstance(arg, str) and arg.startswith("torch "):
            pending = _STORAGE_SIZES.get(arg.split()[1])
        elif pending is not None and "UNICODE" in name:
            sizes[str(arg)] = pending
            pending = None
    return sizes


def _check_safetensors(handle: BinaryIO, size: int, head: bytes) -> None:
    if len(head) < 8:
        raise CorruptFile("shorter than the safetensors header length")
    (length,) = struct.unpack_from("<Q", head)
    if length == 0 or length > _SAFETENSORS_MAX_HEADER or 8 + length > size:
        raise CorruptFile("safetensors header length does not fit the file")
    handle.seek(8)
    try:
        header = json.loads(handle.read(length))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFile(f"safetensors header is not JSON ({exc})") from exc
    except RecursionError:
        raise CorruptFile("safetensors header nests too deeply") from None
    if not isinstance(header, dict):
        raise CorruptFile("safetensors header is not a JSON object")
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        raise CorruptFile(f"safetensors data should end at byte {expected}, file has {size}")


def _varint(handle: BinaryIO) -> int:
    value, shift = 0, 0
    while True:
        byte = handle.read(1)
        if not byte:
            raise CorruptFile("protobuf ends inside a varint")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise CorruptFile("protobuf varint too long")


def _check_onnx(handle: BinaryIO, size: int, head: bytes) -> None:
    """Walk the ModelProto's top-level fields; they must end exactly at EOF."""
    handle.seek(0)
    position = 0
    fields = 0
    while position < size:
        tag = _varint(handle)
        wire, number = tag & 7, tag >> 3
        if number == 0:
            raise CorruptFile("protobuf field number 0")
        if wire == 0:
            _varint(handle)
        elif wire == 1:
            handle.seek(8, os.SEEK_CUR)
        elif wire == 2:
            handle.seek(_varint(handle), os.SEEK_CUR)
        elif wire == 5:
            handle.seek(4, os.SEEK_CUR)
        else:
            raise CorruptFile(f"protobuf wire type {wire} is not valid here")
        position = handle.tell()
        fields += 1
    if position != size or fields == 0:
        raise CorruptFile(f"ONNX protobuf fields run to byte {position}, file has {size}")


# ggml tensor types: (elements per block, bytes per block).
_GGML_TYPES = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 36),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    30: (1, 2),
}
_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _read(handle: BinaryIO, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise CorruptFile("GGUF ends inside its metadata")
    return data


def _gguf_string(handle: BinaryIO) -> bytes:
    (length,) = struct.unpack("<Q", _read(handle, 8))
    if length > 2**24:
        raise CorruptFile("GGUF string length is not plausible")
    return _read(handle, length)


def _gguf_skip_value(handle: BinaryIO, kind: int) -> None:
    if kind in _GGUF_SCALARS:
        _read(handle, _GGUF_SCALARS[kind])
    elif kind == _GGUF_STRING:
        _gguf_string(handle)
    elif kind == _GGUF_ARRAY:
        item_kind, count = struct.unpack("<IQ", _read(handle, 12))
        if item_kind in _GGUF_SCALARS:
            _read(handle, _GGUF_SCALARS[item_kind] * count)
        else:
            for _ in range(count):
                _gguf_skip_value(handle, item_kind)
    else:
        raise CorruptFile(f"GGUF metadata value type {kind} unknown")


def _check_gguf(handle: BinaryIO, size: int, head: bytes) -> None:
    if not head.startswith(b"GGUF"):
        raise CorruptFile("no GGUF magic")
    handle.seek(4)
    version, tensors, pairs = struct.unpack("<IQQ", _read(handle, 20))
    if version not in (2, 3):
        raise CorruptFile(f"GGUF version {version} not supported")
    alignment = 32
    for _ in range(pairs):
        key = _gguf_string(handle)
        (kind,) = struct.unpack("<I", _read(handle, 4))
        if key == b"general.alignment" and kind == 4:
            (alignment,) = struct.unpack("<I", _read(handle, 4))
        else:
            _gguf_skip_value(handle, kind)
    end = 0
    for _ in range(tensors):
        _gguf_string(handle)
        (dims,) = struct.unpack("<I", _read(handle, 4))
        shape = struct.unpack(f"<{dims}Q", _read(handle, 8 * dims))
        kind, offset = struct.unpack("<IQ", _read(handle, 12))
        elements = 1
        for extent in shape:
            elements *= extent
        block = _GGML_TYPES.get(kind)
        nbytes = elements // block[0] * block[1] if block else 0
        end = max(end, offset + nbytes)
    data_start = -(-handle.tell() // alignment) * alignment
    if data_start + end > size:
        raise CorruptFile(f"GGUF tensor data should reach byte {data_start + end}, file has {size}")


_BY_SUFFIX: dict[str, Callable[[BinaryIO, int, bytes], None]] = {
    ".pt": _check_pickle,
    ".pth": _check_pickle,
    ".pkl": _check_pickle,
    ".pickle": _check_pickle,
    ".ckpt": _check_pickle,
    ".safetensors": _check_safetensors,
    ".onnx": _check_onnx,
    ".gguf": _check_gguf,
}
