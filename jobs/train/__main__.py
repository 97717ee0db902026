"""`python -m jobs.train STAGE ...`, the same as `patchscaler train STAGE ...`."""
import sys

from . import main

sys.exit(main())
