"""Progress inside a photo: the in-process engine shows the GRM's tiles and the Patch-DiT's
patches done, with an ETA, per piece."""
from helpers import encode, opts_for, photo, write_tree


def test_local_engine_shows_patches_done_and_eta_per_image(checkpoint, tmp_path, caplog):
    from pipeline.local import run_local
    from pipeline.progress import Progress
    src = tmp_path / "in"
    write_tree(src, {"big.png": encode(photo(40, 32, seed=1))})
    caplog.set_level("INFO", logger="patchscaler.progress")
    s = run_local(opts_for(src, tmp_path / "out", checkpoint, run_id="p1", max_batch=2),
                  progress=Progress(interval=0, tty=False))
    n = sum(s["patches_per_group"])
    lines = [r.getMessage() for r in caplog.records if r.name == "patchscaler.progress"]
    patch_lines = [x for x in lines if x.startswith("  piece 1/1: Patch-DiT")]
    assert len(patch_lines) >= 3, lines  # updated per Patch-DiT batch, not once per image
    assert any("ETA" in x for x in patch_lines)
    assert patch_lines[-1].startswith(f"  piece 1/1: Patch-DiT: {n}/{n} patch")
    assert any(x.startswith("  piece 1/1: GRM: 1/1 tile") for x in lines), lines   # the GRM shows progress too
    assert any(x.startswith("big.png (40x32): 0/1 piece") for x in lines), lines
    assert any(x.startswith("upscale: 1/1 img") for x in lines)
