from __future__ import annotations

import os

import torch

# Tests run two at a time (pytest -n 2) on two cores: one thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
