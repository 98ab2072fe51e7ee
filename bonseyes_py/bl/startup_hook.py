"""PyInstaller runtime hook of BL's executable: runs before any other module, at every container start.

The cyclic garbage collector is off until BM has accepted the artefact licence (``main.main``
re-enables it): the start-up imports allocate hundreds of thousands of objects, none of them
garbage, and the collections they trigger cost several milliseconds on BL's critical path.
Not imported by anything else.
"""

from __future__ import annotations

import gc

gc.disable()
