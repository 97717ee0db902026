"""What a run reads and where it writes: DST inside SRC is refused (local and S3), a missing SRC
is exit 2 and an empty one says so, symlinks stay inside SRC and every entry not read is
recorded. Tiny model, tiny images, the in-process engine (the rules live in code both
engines share)."""
import os

from helpers import encode, manifest_rows, opts_for, photo, write_tree


def test_dst_inside_src_is_refused_local_and_s3(checkpoint, tmp_path, capsys, s3_endpoint):
    from jobs.cli import main
    src = tmp_path / "in"
    write_tree(src, {"a.png": encode(photo(16, 16))})
    base = ["--engine", "local", "--checkpoint", checkpoint]
    for dst in (src / "up", src, src / "deep" / "er"):
        assert main(["upscale", str(src), str(dst), *base]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "SRC" in err[0], err
    assert main(["upscale", str(src / "a.png"), str(src), *base]) == 2  # one file, written beside itself
    capsys.readouterr()
    assert sorted(p.name for p in src.rglob("*")) == ["a.png"]  # nothing written, nothing read back
    # a sibling whose name merely starts like SRC is fine
    assert main(["upscale", str(src), str(tmp_path / "in-up"), *base]) == 0
    capsys.readouterr()

    s3, endpoint, _ = s3_endpoint
    s3.create_bucket(Bucket="archive")
    s3.put_object(Bucket="archive", Key="in/a.png", Body=encode(photo(16, 16)))
    assert main(["upscale", "s3://archive/in", "s3://archive/in/up", "--s3-endpoint", endpoint, *base]) == 2
    assert "inside SRC" in capsys.readouterr().err
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="archive")["Contents"]] == ["in/a.png"]


def test_missing_src_is_exit_2_and_empty_src_says_so(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    base = ["--engine", "local", "--checkpoint", checkpoint]
    assert main(["upscale", str(tmp_path / "does" / "not" / "exist"), str(tmp_path / "o"), *base]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert main(["upscale", str(tmp_path / "empty"), str(tmp_path / "o"), *base]) == 0
    out = capsys.readouterr()
    assert "SRC has no images" in out.out and "inputs                0" in out.out


def test_symlinks_stay_inside_src_and_skipped_entries_are_recorded(checkpoint, tmp_path):
    from pipeline.local import run_local
    src, outside, dst = tmp_path / "in", tmp_path / "outside", tmp_path / "out"
    write_tree(src, {"a.png": encode(photo(16, 16, seed=1)), "sub/b.png": encode(photo(12, 12, seed=2)),
                     ".hidden.png": encode(photo(8, 8)), ".cache/c.png": encode(photo(8, 8))})
    write_tree(outside, {"secret.png": encode(photo(8, 8, seed=3)), "album/x.png": encode(photo(8, 8, seed=4))})
    os.symlink(src / "a.png", src / "link_in.png")                 # inside SRC: read, own name
    os.symlink(src / "sub", src / "sublink")                       # folder inside SRC: followed
    os.symlink(outside / "secret.png", src / "link_out.png")       # leaves SRC
    os.symlink(outside / "album", src / "album")                   # folder leaving SRC
    os.symlink(src, src / "sub" / "loop")                          # loops back
    os.symlink(tmp_path / "nowhere.png", src / "broken.png")       # broken
    s = run_local(opts_for(src, dst, checkpoint, run_id="s1"))
    assert sorted(r["input"] for r in s["rows"]) == ["a.png", "link_in.png", "sub/b.png", "sublink/b.png"]
    assert all(r["status"] == "ok" for r in s["rows"])
    reasons = dict(s["not_read"])
    assert set(reasons) == {".hidden.png", ".cache/", "link_out.png", "album/", "sub/loop/", "sublink/loop/",
                            "broken.png"}
    assert "leaves SRC" in reasons["link_out.png"] and "leaves SRC" in reasons["album/"]
    assert "loops" in reasons["sub/loop/"] and "broken" in reasons["broken.png"]
    assert "hidden" in reasons[".hidden.png"] and "hidden" in reasons[".cache/"]
    manifest = {r["input"]: r for r in manifest_rows(dst)}
    for name, why in reasons.items():
        assert manifest[name]["status"] == "skipped" and manifest[name]["error"] == why
    assert not (dst / "link_out.png").exists() and not (dst / "album").exists()
    # a skipped entry is not an image: it never counts as done or failed
    again = run_local(opts_for(src, dst, checkpoint, run_id="s2"))
    assert again["ok"] == again["failed"] == 0 and again["skipped"] == 4 and len(again["not_read"]) == 7
