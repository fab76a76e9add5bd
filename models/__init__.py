"""The defect model: network, training, calibration, checkpoint, predictor, heatmap.

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` (unless already set) before any of
its modules imports torch. With OpenMP's default, a torch thread that finishes early spins
waiting for its sibling; on a 2-core line PC shared with the web service, the database and
other processes that spinning starves everyone. ``bench/model_throughput.py`` measured the
predictor at load ~2.5 on this 2-core machine: 6 img/s (batch 1) and 25 img/s (batch 16)
spinning, 86 and 218 img/s passive. It only takes effect if torch is not imported yet.

``DEFAULT_WEIGHTS`` lives here, beside the files it names, so the model package finds its
bundled weights without asking the service's settings (which take their default from here).
"""

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "default.pt"
