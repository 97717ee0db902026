"""What a user reads when a command line or an input is refused: one line naming the problem and
where the help is (exit 2), --quality's range rather than a hundred choices, every command in
the top-level --help, the pixel guard naming --max-pixels whatever the size, and Ray Data's
advice that a user of this command cannot act on kept out of stderr without --verbose."""
import logging
import struct
import zlib

import pytest

pytestmark = pytest.mark.fast


def _usage_error(capsys, argv) -> list[str]:
    from jobs.cli import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv,problem", [
    (["upscale"], "the following arguments are required: src, dst"),
    (["upscale", "S", "D", "--quality", "200"], "--quality: '200': a whole number from 1 to 100"),
    (["upscale", "S", "D", "--bogus"], "unrecognized arguments: --bogus"),
    (["upscale", "S", "D", "--engine", "warp"], "argument --engine: invalid choice: 'warp'"),
])
def test_a_usage_error_of_upscale_is_one_line_pointing_to_its_help(capsys, argv, problem):
    err = _usage_error(capsys, argv)
    assert len(err) == 1, err
    assert err[0].startswith("patchscaler upscale: error: ") and problem in err[0], err
    assert err[0].endswith("see `patchscaler upscale --help`"), err


def test_a_top_level_usage_error_is_one_line_too(capsys):
    err = _usage_error(capsys, ["upscal"])
    assert len(err) == 1 and "invalid choice: 'upscal'" in err[0] and err[0].endswith("see `patchscaler --help`")


def test_the_top_level_help_names_every_command(capsys):
    from jobs.cli import COMMANDS, main
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]   # the paragraph under the usage line
    for cmd in COMMANDS:
        assert f"patchscaler {cmd}`" in description, (cmd, description)


def _png_header(w: int, h: int) -> bytes:
    """A PNG that says it is w x h, with no pixels: all the pixel guard may read."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", b"")


@pytest.mark.parametrize("w,h", [(5000, 4000), (10000, 10000), (20000, 20000)])
def test_the_pixel_guard_names_max_pixels_whatever_the_size(w, h):
    # 20 M is over our limit only; 100 M also over Pillow's warning; 400 M over Pillow's error
    from patchscaler import imageio
    with pytest.raises(imageio.BadImage) as e:
        imageio.probe(_png_header(w, h), 16_000_000)
    text = str(e.value)
    assert text.startswith("too large: ") and "16000000 (--max-pixels)" in text and str(w * h) in text, text


def test_ray_data_issue_detector_is_quiet_without_verbose():
    from actors.runtime import quiet_ray
    detector = logging.getLogger("ray.data._internal.issue_detection.issue_detector_manager")
    try:
        quiet_ray(verbose=False)
        assert not detector.isEnabledFor(logging.WARNING)
        quiet_ray(verbose=True)
        assert detector.isEnabledFor(logging.WARNING)
    finally:
        quiet_ray(verbose=False)


def test_version_prints_the_packages_version(capsys):
    from jobs.cli import main
    from patchscaler import __version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"patchscaler {__version__}"


def test_a_missing_src_is_refused_before_anything_starts_and_points_to_the_help(tmp_path, capsys, caplog, monkeypatch):
    import jobs.cli
    from jobs.cli import main

    def no_engine(*a, **k):
        raise AssertionError("an engine was started for a SRC that does not exist")
    monkeypatch.setattr(jobs.cli, "choose_engine", no_engine)
    with caplog.at_level(logging.INFO):
        assert main(["upscale", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"patchscaler: error: SRC {tmp_path / 'nowhere'} does not exist; see `patchscaler upscale --help`"]
    assert not [r for r in caplog.records if r.name == "patchscaler"], "nothing is logged before the refusal"
    assert not (tmp_path / "out").exists()


def test_the_checkpoint_help_names_the_shipped_models(capsys):
    from jobs.cli import main
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--checkpoint CHECKPOINT model: a shipped one by name, default (the default) or compact" in text
