"""Which files under SRC a run reads (docs/usage.md, "Inputs"), on a `storage.Store` (any
fsspec URI), and what says an input is still the one an output was made from.

- Inputs are the files under SRC whose names end in an image extension. Hidden names (a part
  starting with '.') and DST's own `_manifest` folder are not read. A symlink is followed only
  while it stays inside SRC; a symlink that leaves SRC, a broken one, a folder link that loops
  back, a hidden image name and an object key with '..' / '.' segments are not read, and each
  gets a manifest row with status `skipped` and the reason.
- DST must lie outside SRC (and SRC outside DST)."""

import contextlib
import os
import posixpath
import stat

from storage import Store, content_tag

from .manifest import MANIFEST_DIR

# the one list of the names a run reads (the CLI and the training data derive theirs from it)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
EXTENSIONS_TEXT = " ".join(IMAGE_EXTENSIONS)


def list_inputs(store: Store) -> tuple[list[str], list[tuple[str, str]]]:
    """(inputs, skipped): the relative names of the images under the root, sorted, and
    the entries that are not read, each with its reason (see the module's rules)."""
    inputs, skipped, _ = scan_inputs(store)
    return inputs, skipped


def scan_inputs(store: Store) -> tuple[list[str], list[tuple[str, str]], dict[str, str]]:
    """(inputs, skipped, signatures) from one listing: `list_inputs`, and for each input what
    says it is still the one an output was made from (`input_signatures`). An object store is
    listed a page at a time, and only names and signatures are kept."""
    store.invalidate()
    if store.is_local:
        inputs, skipped, sigs = _walk_local(store.path)
        return sorted(inputs), sorted(skipped), sigs
    inputs, skipped, sigs = [], [], {}
    for rel, sig in store.walk():
        parts = rel.split("/")
        if parts[0] == MANIFEST_DIR or not _is_image_name(rel):
            continue
        try:
            safe_relpath(rel)
        except UnsafePath as e:
            skipped.append((rel, f"{e}: not read"))
            continue
        if any(s.startswith(".") for s in parts):
            skipped.append((rel, "hidden name: not read"))
            continue
        inputs.append(rel)
        sigs[rel] = sig
    return sorted(inputs), sorted(skipped), sigs

def list_images(store: Store) -> list[str]:
    """The inputs of `list_inputs` (a single file: [""])."""
    if store.fs.isfile(store.path):
        return [""]
    return list_inputs(store)[0]


def _is_image_name(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk_local(root: str) -> tuple[list[str], list[tuple[str, str]], dict[str, str]]:
    """Local listing that never leaves SRC: symlinks are followed only when their target
    resolves inside SRC, and a folder link is entered only if it does not loop back to a
    folder being walked. Each input's signature comes from the stat the walk makes anyway."""
    real_root = os.path.realpath(root)
    inputs, skipped, sigs = [], [], {}

    def walk(folder: str, prefix: str, chain: tuple[str, ...]):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            skipped.append((prefix or "./", f"cannot list folder: {e.strerror or e}"))
            return
        for e in entries:
            rel = prefix + e.name
            if not prefix and e.name == MANIFEST_DIR:
                continue
            link = e.is_symlink()
            target = os.path.realpath(e.path) if link else e.path
            try:
                st = os.stat(e.path)  # follows links
            except OSError:
                if _is_image_name(e.name):
                    skipped.append((rel, "broken symlink: not read"))
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if e.name.startswith("."):
                if is_dir or _is_image_name(e.name):
                    skipped.append((rel + ("/" if is_dir else ""), "hidden name: not read"))
                continue
            if link and not _inside(target, real_root):
                if is_dir or _is_image_name(e.name):
                    kind = "folder" if is_dir else "file"
                    skipped.append((rel + ("/" if is_dir else ""), f"symlinked {kind} leaves SRC (-> {target}): not read"))
                continue
            if is_dir:
                real = os.path.realpath(e.path)
                if real in chain:
                    skipped.append((rel + "/", "symlinked folder loops back into its own path: not read"))
                    continue
                walk(e.path, rel + "/", chain + (real,))
            elif stat.S_ISREG(st.st_mode) and _is_image_name(e.name):
                inputs.append(rel)
                sigs[rel] = _local_signature(st)

    walk(root, "", (real_root,))
    return inputs, skipped, sigs


def _local_signature(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def overlap(src: Store, dst: Store) -> str | None:
    """Why SRC and DST may not be used together (None if they are apart): DST inside SRC
    would make every run re-read its own outputs as new inputs, SRC inside DST lets outputs
    overwrite inputs."""
    if src.protocol != dst.protocol or (not src.is_local and src.endpoint != dst.endpoint):
        return None
    if src.is_local:
        a, b, sep = os.path.realpath(src.path), os.path.realpath(dst.path), os.sep
    else:
        a, b, sep = src.path.strip("/"), dst.path.strip("/"), "/"
    if a == b:
        return f"DST {dst.uri()} is SRC: outputs would overwrite inputs and be read back as inputs"
    if b.startswith(a.rstrip(sep) + sep):
        return (f"DST {dst.uri()} is inside SRC {src.uri()}: every run would upscale the previous "
                "run's outputs again; choose a DST outside SRC")
    if a.startswith(b.rstrip(sep) + sep):
        return f"SRC {src.uri()} is inside DST {dst.uri()}: outputs could overwrite inputs; choose a DST outside SRC"
    return None


class UnsafePath(ValueError):
    """An input key that would escape the output prefix."""


def safe_relpath(rel: str) -> str:
    """Refuse keys that would escape the output prefix ('..' segments, absolute paths, NUL)."""
    if "\x00" in rel or rel.startswith("/") or "\\" in rel:
        raise UnsafePath(f"unsafe key {rel!r}")
    if any(seg in ("..", ".", "") for seg in rel.split("/")):
        raise UnsafePath(f"unsafe key {rel!r}: '..', '.' or empty segment")
    return rel


def input_signatures(store: Store, inputs: list[str]) -> dict[str, str]:
    """What says an input is still the one an output was made from, without reading it: a local
    file's size and modification time (a replaced or edited file gets a new mtime; reading every
    photo to hash it would cost a nightly run as much I/O as the archive), an object's ETag (the
    store's own content tag: a new upload of other bytes gets a new one) and size. `scan_inputs`
    gives these for a whole listing; this is for named inputs ("" = the root is the file)."""
    out = {}
    for rel in inputs:
        path = store.full(rel)
        if store.is_local:
            with contextlib.suppress(OSError):
                out[rel] = _local_signature(os.stat(path))
            continue
        with contextlib.suppress(FileNotFoundError):
            out[rel] = content_tag(store.retrying(f"a check of {rel or store.path}", lambda: store.fs.info(path)))
    return out
