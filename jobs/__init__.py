"""Entry points: the `patchscaler` command line (jobs/cli.py, also `python -m jobs.cli`) and
`python -m jobs.upscale` (the upscale command alone, for `ray job submit`)."""
