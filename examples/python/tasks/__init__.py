"""Example kiln tasks in Python: one package, one component (`python -m kiln_sdk build app.py`)."""
