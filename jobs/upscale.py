"""`python -m jobs.upscale SRC DST [options]`: the upscale job, e.g. under `ray job submit`."""
import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main(["upscale", *sys.argv[1:]]))
