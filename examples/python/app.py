"""The component's entry: importing the modules declares their tasks.

Build it into one component with ``python -m kiln_sdk build app.py -o dist/app.wasm``.
"""

from tasks import approval, env, fanout, hello, http_call, outcomes, waits  # noqa: F401
