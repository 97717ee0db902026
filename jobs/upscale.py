"""`python -m jobs.upscale SRC DST [options]`: the upscale command alone, e.g. under `ray job submit`.

It shares its name with patchscaler/upscale.py (the library's in-process upscale) knowingly:
both names are interfaces, this one the module path that job submissions and the README run,
that one the library's import path, so neither is renamed."""
import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main(["upscale", *sys.argv[1:]]))
