"""RTM storage: a versioned folder on any fsspec URI

    PREFIX/rtm-VERSION/keys.safetensors     keys (N, d) float16, values (N, C, V, V) float16
    PREFIX/rtm-VERSION/index.faiss          the serialised FAISS index
    PREFIX/rtm-VERSION/rtm.json             config (codec, T version, sizes, seed, ...) and
                                            the SHA-256 of the two files above, written last

`rtm.json` is written last, so a folder without it is an unfinished build; loading checks the
checksums and that the codec and T version match the model that will use the RTM."""
from __future__ import annotations

import hashlib
import json
import posixpath

import faiss
import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from storage import Store

from .faiss_rtm import FaissRTM, build_index


class RTMMismatch(ValueError):
    """An RTM that is unfinished, corrupt, or built for another codec / T version."""


def save_rtm(prefix: str, version: str, keys: torch.Tensor, values: torch.Tensor, meta: dict,
             index_kind: str = "flat", options: dict | None = None) -> str:
    store = Store(prefix, options or {})
    folder = f"rtm-{version}"
    blob = st_save({"keys": keys.half().contiguous(), "values": values.half().contiguous()})
    index = build_index(keys.float().numpy(), index_kind)
    idx_bytes = faiss.serialize_index(index).tobytes()
    store.write_atomic(posixpath.join(folder, "keys.safetensors"), blob)
    store.write_atomic(posixpath.join(folder, "index.faiss"), idx_bytes)
    doc = {**meta, "version": version, "index_kind": index_kind, "size": int(keys.shape[0]),
           "sha256": {"keys.safetensors": hashlib.sha256(blob).hexdigest(),
                      "index.faiss": hashlib.sha256(idx_bytes).hexdigest()}}
    store.write_atomic(posixpath.join(folder, "rtm.json"), json.dumps(doc, indent=1).encode())
    return store.uri(folder)


def load_rtm(uri: str, options: dict | None = None, expect: dict | None = None) -> FaissRTM:
    """Load and verify an RTM folder; `expect` (e.g. {"codec": ..., "texture_version": ...})
    must match its config."""
    store = Store(uri, options or {})
    try:
        doc = json.loads(store.read("rtm.json"))
    except FileNotFoundError:
        raise RTMMismatch(f"{uri}: no rtm.json (not an RTM, or an unfinished build)") from None
    files = {}
    for name, digest in doc["sha256"].items():
        data = store.read(name)
        if hashlib.sha256(data).hexdigest() != digest:
            raise RTMMismatch(f"{uri}/{name}: checksum mismatch (corrupt or partial copy)")
        files[name] = data
    for k, v in (expect or {}).items():
        if doc.get(k) != v:
            raise RTMMismatch(f"{uri}: RTM was built with {k}={doc.get(k)!r}, the model needs {v!r}")
    t = st_load(files["keys.safetensors"])
    index = faiss.deserialize_index(np.frombuffer(files["index.faiss"], dtype=np.uint8))
    return FaissRTM(t["keys"].float(), t["values"], doc, index=index)


def expectations(model) -> dict:
    c = model.cfg
    return {"codec": c.codec.kind, "codec_factor": c.codec.factor, "patch_size": c.pgs.patch_size,
            "texture_version": c.texture.version, "feature_dim": c.texture.feature_dim}
