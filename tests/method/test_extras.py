"""FAISS is an install extra (`[cpu]` or `[gpu]`, which cannot be installed side by side): the
main job on the shipped checkpoint must run without it, and a FAISS RTM must say which extra
to install when it is missing."""
import subprocess
import sys

from PIL import Image

BLOCK_FAISS = "import sys; sys.modules['faiss'] = None\n"  # `import faiss` now raises ImportError


def _python(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_FAISS + code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)


def test_upscale_runs_without_faiss(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (24, 20), (120, 60, 30)).save(src / "a.png")
    r = _python(f"from jobs.cli import main\nsys.exit(main(['upscale', {str(src)!r}, {str(tmp_path / 'out')!r}, "
                "'--engine', 'local']))\n", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Image.open(tmp_path / "out" / "a.png").size == (96, 80)


def test_faiss_rtm_names_the_extra_when_faiss_is_missing(tmp_path):
    r = _python("import torch\nfrom patchscaler.rtm import FaissRTM\nFaissRTM(torch.zeros(2, 4), torch.zeros(2, 1))\n",
                tmp_path)
    assert r.returncode != 0
    assert "patchscaler[cpu]" in r.stderr and "patchscaler[gpu]" in r.stderr, r.stderr[-2000:]
