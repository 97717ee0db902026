"""What each output is called under DST.

An output is named after its input with the output format's extension. When the extension
changes (GIF -> PNG, wrong extension, --format) and another input has the same name before its
extension (b.gif beside b.png), the output keeps the input's extension: b.gif -> b.gif.png. An
output name that another input's recorded output already holds is never overwritten: that
image gets an error row instead."""

import posixpath

from .listing import safe_relpath


class OutputCollision(ValueError):
    """The output name an input would get is held by another input's output."""


def naming_rules(inputs: list[str], owners: dict[str, str], only: list[str] | None = None) -> dict[str, dict]:
    """For each input, what its output may be called, decided from all names before the run:

    keep_ext: the output keeps the input's extension when the format changes (another input
      shares its stem, or an input is named exactly like its stem), so b.gif -> b.gif.png
      beside b.png -> b.png.
    taken: output names this input may not write, with their owner: outputs other inputs
      already have (from the manifest, `owners` = {output: input}) and, for keep_ext inputs,
      other inputs' own names (b.gif.png the input beside b.gif).

    Then no two inputs of a run can write the same name: an unchanged name is the input's own
    (unique); a changed name stem+ext is used only when no other input has that stem and no
    input is named like the stem; a kept-extension name input+ext is refused when it is an
    input's name. Rules are made for `only` (default: every input), decided from all of them."""
    stems: dict[str, int] = {}
    for r in inputs:
        s = posixpath.splitext(r)[0]
        stems[s] = stems.get(s, 0) + 1
    names = set(inputs)
    by_stem: dict[str, list[tuple[str, str]]] = {}
    for out, owner in owners.items():
        by_stem.setdefault(posixpath.splitext(out)[0], []).append((out, owner))
    by_input_stem: dict[str, list[str]] = {}   # only stems that are an input's whole name
    for r in inputs:
        s = posixpath.splitext(r)[0]
        if s in names:
            by_input_stem.setdefault(s, []).append(r)
    rules = {}
    for r in (inputs if only is None else only):
        stem = posixpath.splitext(r)[0]
        keep = stems[stem] > 1 or stem in names
        taken = {o: w for s in ((stem, r) if keep else (stem,)) for o, w in by_stem.get(s, []) if w != r}
        if keep:
            taken.update({n: n for n in by_input_stem.get(r, []) if n != r})
        rules[r] = {"keep_ext": keep, "taken": taken}
    return rules


def output_relpath(input_rel: str, fmt: str, keep_ext: bool = False) -> str:
    from PIL import Image

    from patchscaler.imageio import WRITABLE
    rel = safe_relpath(input_rel)
    stem, ext = posixpath.splitext(rel)
    # keep the user's spelling of the extension when the format is unchanged (.jpeg, .JPG)
    if Image.registered_extensions().get(ext.lower()) == fmt:
        return rel
    return (rel if keep_ext else stem) + WRITABLE[fmt]


def check_output_name(input_rel: str, out_rel: str, rules: dict | None) -> str:
    owner = (rules or {}).get("taken", {}).get(out_rel)
    if owner is not None:
        what = "is another input's name" if owner == out_rel else f"already holds the output of {owner}"
        raise OutputCollision(f"{input_rel} would be written as {out_rel}, which {what}; "
                              "rename one of them or remove that output")
    return out_rel


def output_owners(rows: dict[str, dict], files: set[str]) -> dict[str, str]:
    """{output name: input} of the outputs the manifest records and that still exist."""
    return {r["output"]: inp for inp, r in rows.items()
            if r["status"] == "ok" and r["output"] and r["output"] in files}
