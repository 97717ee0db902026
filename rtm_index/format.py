"""RTM storage: a versioned folder on any fsspec URI

    PREFIX/rtm-VERSION/keys.safetensors     keys (N, d) float16, values (N, C, V, V) float16
    PREFIX/rtm-VERSION/index.faiss          the serialised FAISS index
    PREFIX/rtm-VERSION/rtm.json             config (codec, T version, sizes, seed, ...) and
                                            the SHA-256 of the two files above, written last

`rtm.json` is written last, so a folder without it is an unfinished build; loading checks the
checksums and that the codec and T version match the model that will use the RTM."""
from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import posixpath
import struct

import numpy as np
import torch

from storage.durable import sha256_file
from storage import Store

from patchscaler.rtm import FaissRTM, build_index, import_faiss


class RTMMismatch(ValueError):
    """An RTM that is unfinished, corrupt, or built for another codec / T version."""


def save_rtm(prefix: str, version: str, keys: torch.Tensor, values: torch.Tensor, meta: dict,
             index_kind: str = "flat", options: dict | None = None) -> str:
    """Write an RTM folder. The keys and values file is written a block of rows at a time and
    hashed as it goes, so `values` may be larger than memory (a memory-mapped file)."""
    store = Store(prefix, options or {})
    folder = f"rtm-{version}"
    digest = hashlib.sha256()

    def write(f):
        for block in safetensors_blocks({"keys": keys, "values": values}, torch.float16):
            digest.update(block)
            f.write(block)
    store.write_stream(posixpath.join(folder, "keys.safetensors"), write)
    index = build_index(keys.float().numpy(), index_kind)
    idx_bytes = import_faiss().serialize_index(index).tobytes()
    store.write_atomic(posixpath.join(folder, "index.faiss"), idx_bytes)
    doc = {**meta, "version": version, "index_kind": index_kind, "size": int(keys.shape[0]),
           "sha256": {"keys.safetensors": digest.hexdigest(),
                      "index.faiss": hashlib.sha256(idx_bytes).hexdigest()}}
    store.write_atomic(posixpath.join(folder, "rtm.json"), json.dumps(doc, indent=1).encode())
    return store.uri(folder)


def safetensors_blocks(tensors: dict[str, torch.Tensor], dtype: torch.dtype, rows: int = 4096):
    """The bytes of a safetensors file of these tensors (cast to `dtype`), a block of rows at a
    time: the header (its length padded to 8 bytes, as the safetensors library writes it), then
    each tensor's data in order."""
    name = {torch.float16: "F16", torch.float32: "F32"}[dtype]
    size = torch.empty(0, dtype=dtype).element_size()
    header, offset = {}, 0
    for k, t in tensors.items():
        n = t.numel() * size
        header[k] = {"dtype": name, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    yield struct.pack("<Q", len(text)) + text
    for t in tensors.values():
        for i in range(0, t.shape[0], rows):
            yield t[i:i + rows].to(dtype).contiguous().numpy().tobytes()


def load_rtm(uri: str, options: dict | None = None, expect: dict | None = None) -> FaissRTM:
    """Open and verify an RTM folder; `expect` (e.g. {"codec": ..., "texture_version": ...})
    must match its config. The values are served from the file, memory-mapped: a process holds
    the pages its retrievals touch, not the whole RTM (an object store's file is copied once to
    a local cache first). The keys live in the FAISS index."""
    store = Store(uri, options or {})
    try:
        doc = json.loads(store.read("rtm.json"))
    except FileNotFoundError:
        raise RTMMismatch(f"{uri}: no rtm.json (not an RTM, or an unfinished build)") from None
    for k, v in (expect or {}).items():
        if doc.get(k) != v:
            raise RTMMismatch(f"{uri}: RTM was built with {k}={doc.get(k)!r}, the model needs {v!r}")
    idx_bytes = store.read("index.faiss")
    if hashlib.sha256(idx_bytes).hexdigest() != doc["sha256"]["index.faiss"]:
        raise RTMMismatch(f"{uri}/index.faiss: checksum mismatch (corrupt or partial copy)")
    path = _verified_local(store, "keys.safetensors", doc["sha256"]["keys.safetensors"])
    tensors = mapped_safetensors(path)
    index = import_faiss().deserialize_index(np.frombuffer(idx_bytes, dtype=np.uint8))
    return FaissRTM(tensors["keys"], tensors["values"], doc, index=index)


def _verified_local(store: Store, name: str, digest: str) -> str:
    """A local path of `name` whose SHA-256 is `digest`, hashed as it streams (never held whole):
    the file itself on a local store, else a copy in the cache (~/.cache/patchscaler/rtm)."""
    if store.is_local:
        path = store.full(name)
        if sha256_file(path) != digest:
            raise RTMMismatch(f"{store.uri(name)}: checksum mismatch (corrupt or partial copy)")
        return path
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "patchscaler", "rtm")
    path = os.path.join(cache, f"{digest}.safetensors")
    if os.path.exists(path):   # named by its content's hash, verified when it was written
        return path
    os.makedirs(cache, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.part"
    h = hashlib.sha256()
    with store.fs.open(store.full(name), "rb") as src, open(tmp, "wb") as out:
        for block in iter(lambda: src.read(1 << 22), b""):
            h.update(block)
            out.write(block)
    if h.hexdigest() != digest:
        os.unlink(tmp)
        raise RTMMismatch(f"{store.uri(name)}: checksum mismatch (corrupt or partial copy)")
    os.replace(tmp, path)
    return path


_DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": None, "U8": np.uint8}


def mapped_safetensors(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as memory-mapped CPU tensors (copy-on-write: nothing is
    read until used, and a write never reaches the file). Format: an 8-byte header length, a
    JSON header of names, dtypes, shapes and data offsets, then the data."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(t["dtype"])
        if dtype is None:
            raise RTMMismatch(f"{path}: tensor {name} has dtype {t['dtype']}, which cannot be mapped")
        begin, end = t["data_offsets"]
        shape = tuple(t["shape"])
        if end == begin:
            out[name] = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype)
            continue
        arr = np.memmap(path, dtype=dtype, mode="c", offset=8 + n + begin, shape=shape)
        # retrievals read scattered entries: no read-ahead, or each 24 KB entry read would
        # bring its neighbours into memory too
        with contextlib.suppress(AttributeError, OSError, ValueError):
            arr._mmap.madvise(mmap.MADV_RANDOM)
        out[name] = torch.from_numpy(arr)
    return out


def expectations(model) -> dict:
    c = model.cfg
    return {"codec": c.codec.kind, "codec_factor": c.codec.factor, "patch_size": c.pgs.patch_size,
            "texture_version": c.texture.version, "feature_dim": c.texture.feature_dim}
