"""`python -m kiln_sdk build app.py -o app.wasm`: see `_build.py`."""

import sys

from ._build import main

sys.exit(main(sys.argv[1:]))
