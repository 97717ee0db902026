"""Reference Texture Memory retrieval (paper Algorithm 2): keys (N, d), unit vectors =
T(values); values (N, C, V, V), latent texture patches; top-K by normalised inner product.

`RTM` is the exact in-memory version. `FaissRTM` has the same interface (`search`,
`retrieve`, `size`, `meta`) backed by a FAISS inner-product index over L2-normalised keys, for
large memories: "flat" (exact, the default), "ivf" (IVF-Flat, `nprobe` lists searched) or
"hnsw" (HNSW-Flat). GPU FAISS is used when the installed faiss has GPUs (faiss-gpu), else CPU
(faiss-cpu). FAISS is an extra, imported only when a FaissRTM is built or loaded.

The RTM is built in process by rtm_build.py (small sets) or at dataset scale by rtm_index/,
which also stores it (rtm_index/format.py)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def import_faiss():
    try:
        import faiss
    except ImportError as e:  # FAISS is an extra: the two wheels cannot be installed side by side
        raise ImportError("RTM indexes need FAISS: pip install 'patchscaler[cpu]' (or 'patchscaler[gpu]' "
                          "on a CUDA machine)") from e
    return faiss


class RTM:
    """The exact in-memory RTM."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, meta: dict | None = None):
        if keys.shape[0] != values.shape[0]:
            raise ValueError(f"{keys.shape[0]} keys but {values.shape[0]} values")
        if keys.shape[0] == 0:
            raise ValueError("an RTM needs at least one entry")
        self.keys = F.normalize(keys.float(), dim=-1)
        self.values = values
        self.meta = dict(meta or {})

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def search(self, queries: torch.Tensor, k: int,
               exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, d) -> similarities (B, k) descending, indices (B, k). exclude (B, N) bool:
        entries query b must not get (training: those cut from the photo its patch came from);
        they rank below every other entry (similarity -2)."""
        q = F.normalize(queries.float(), dim=-1)
        sims = q @ self.keys.T
        if exclude is not None:
            sims = sims.masked_fill(exclude, -2.0)
        k = min(k, self.size)
        s, i = sims.topk(k, dim=-1)
        return s, i

    def retrieve(self, queries: torch.Tensor, k: int,
                 exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, d) -> texture priors (B, k, C, V, V), similarities (B, k)."""
        s, i = self.search(queries, k, exclude)
        return self.values[i].float(), s


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build_index(keys: np.ndarray, kind: str = "flat", nlist: int = 0, hnsw_m: int = 32) -> "faiss.Index":
    faiss = import_faiss()
    keys = _normalise(keys)
    d = keys.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = nlist or max(1, int(np.sqrt(len(keys))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(keys)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.add(keys)
    return index


def to_gpu_if_available(index: "faiss.Index") -> "faiss.Index":
    faiss = import_faiss()
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


class FaissRTM:
    """The RTM behind a FAISS index (see the module's docstring): `RTM`'s interface."""

    def __init__(self, keys: torch.Tensor | np.ndarray, values: torch.Tensor, meta: dict | None = None,
                 index: "faiss.Index | None" = None, kind: str = "flat", nprobe: int = 8):
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        # the keys are the index's; kept as given (a memory-mapped file's tensor costs nothing
        # until read) for `keys`, which training reads
        self._keys = keys
        self.values = values
        self.meta = dict(meta or {})
        self.index = to_gpu_if_available(index if index is not None else build_index(self.keys, kind))
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = nprobe

    @property
    def keys(self) -> np.ndarray:
        """The L2-normalised keys (float32), computed when asked."""
        k = self._keys
        return _normalise(k.float().numpy() if isinstance(k, torch.Tensor) else k)

    @property
    def size(self) -> int:
        return self.index.ntotal

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = _normalise(queries.detach().float().cpu().numpy())
        s, i = self.index.search(q, min(k, self.size))
        return torch.from_numpy(s), torch.from_numpy(i).long()

    def retrieve(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, i = self.search(queries, k)
        # only the rows retrieved are read (the values may be a memory-mapped file)
        return self.values[i.clamp_min(0)].float(), s
