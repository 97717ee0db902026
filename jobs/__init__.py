"""Entry points: `python -m jobs.upscale`, `python -m jobs.build_rtm`, and the `patchscaler` CLI."""
