"""Two inputs never get one output name: a colliding name keeps its extension and nothing is
overwritten, now or on a later run, and the naming rules never give two inputs one name."""
import pytest
from PIL import Image

from helpers import encode, opts_for, photo, write_tree


def test_colliding_names_keep_their_extension_and_never_overwrite(checkpoint, tmp_path):
    from pipeline.local import run_local
    src, dst = tmp_path / "in", tmp_path / "out"
    write_tree(src, {
        "b.gif": encode(photo(16, 12, seed=1).convert("P"), "GIF"),   # GIF is written as PNG
        "b.png": encode(photo(20, 16, seed=2)),
        "c.jpg": encode(photo(12, 12, seed=3)),                        # PNG bytes named .jpg
        "c.png": encode(photo(8, 12, seed=4)),
        "d.gif": encode(photo(8, 8, seed=5).convert("P"), "GIF"),     # beside d.png its kept-
        "d.png": encode(photo(8, 4, seed=9)),                          # extension name d.gif.png
        "d.gif.png": encode(photo(12, 8, seed=6)),                     # is another input's name
        "e.gif": encode(photo(16, 8, seed=7).convert("P"), "GIF"),    # alone: plain e.png
    })
    s = run_local(opts_for(src, dst, checkpoint, run_id="n1"))
    rows = {r["input"]: r for r in s["rows"]}
    out = {k: r["output"] for k, r in rows.items() if r["status"] == "ok"}
    assert out == {"b.gif": "b.gif.png", "b.png": "b.png", "c.jpg": "c.jpg.png", "c.png": "c.png",
                   "d.gif.png": "d.gif.png", "d.png": "d.png", "e.gif": "e.png"}
    assert rows["d.gif"]["status"] == "error" and "output name collision" in rows["d.gif"]["error"]
    assert "d.gif.png" in rows["d.gif"]["error"]
    sizes = {"b.gif.png": (64, 48), "b.png": (80, 64), "c.jpg.png": (48, 48), "c.png": (32, 48),
             "d.gif.png": (48, 32), "d.png": (32, 16), "e.png": (64, 32)}
    for name, size in sizes.items():  # each output is its own input's image
        assert Image.open(dst / name).size == size, name
    assert s["failed"] == 1

    # resume: everything written is done, only the collision is retried (and refused again)
    again = run_local(opts_for(src, dst, checkpoint, run_id="n2"))
    assert again["ok"] == 0 and again["skipped"] == 7 and [r["input"] for r in again["rows"]] == ["d.gif"]

    # a later input wants a name an earlier input's output holds: refused, nothing overwritten
    before = (dst / "e.png").read_bytes()
    (src / "e.png").write_bytes(encode(photo(24, 24, seed=8)))
    third = run_local(opts_for(src, dst, checkpoint, run_id="n3"))
    r = {x["input"]: x for x in third["rows"]}["e.png"]
    assert r["status"] == "error" and "already holds the output of e.gif" in r["error"]
    assert (dst / "e.png").read_bytes() == before


@pytest.mark.fast
def test_naming_rules_never_give_two_inputs_one_name():
    """Every input and every format an output may get: no two inputs of a run share an
    output name that the naming rules let them write."""
    from itertools import product

    from pipeline.naming import OutputCollision, check_output_name, naming_rules, output_relpath
    inputs = ["a.gif", "a.png", "a.jpg", "a.gif.png", "a", "b.tif", "b.TIF", "c.jpeg", "c.jpg.png",
              "d/x.png", "d/x.webp", "d/x.gif.png", "e.bmp"]
    rules = naming_rules(inputs, owners={})
    formats = ["PNG", "JPEG", "WEBP", "TIFF", "BMP"]
    for choice in product(formats, repeat=3):  # a sample of content-dependent formats
        names = {}
        for i, rel in enumerate(inputs):
            fmt = choice[i % 3]
            try:
                name = check_output_name(rel, output_relpath(rel, fmt, rules[rel]["keep_ext"]), rules[rel])
            except OutputCollision:
                continue
            assert name not in names, (rel, names.get(name), name)
            names[name] = rel
