"""Read notebook 07's Neuronpedia feature batches back with SAEDashboard's own classes (an interoperability check).

Usage: ``python scripts/check_neuronpedia.py FOLDER``, FOLDER e.g.
``notebooks/results/07_sae_baseline_and_dashboards/tiny/dashboards/neuronpedia``.

Needs ``sae_dashboard`` importable. It is not a dependency of this project (its release pulls a CUDA torch and other
pins), so install it without dependencies in a scratch place, e.g.
``pip download --no-deps sae-dashboard==0.8.0 -d /tmp/saed``, then run with
``PYTHONPATH=/tmp/saed/sae_dashboard-0.8.0-py3-none-any.whl``; its ``neuronpedia`` module needs only numpy.
Every batch file is parsed into ``NeuronpediaDashboardBatch`` and each feature's ``to_dict()`` must give back the
values written. Exit status 1 names the first file and key that differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def check(folder: Path) -> int:
    from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch

    files = sorted(folder.glob("*.json"))
    if not files:
        print(f"no batch files (*.json) in {folder}")
        return 1
    n_features = 0
    for path in files:
        data = json.loads(path.read_text())
        batch = NeuronpediaDashboardBatch(**data)
        for written, feature in zip(data["features"], batch.features, strict=True):
            back = feature.to_dict()
            for key, value in written.items():
                if back[key] != value:
                    print(f"{path.name}: feature {written.get('feature_index')}: {key!r} reads back differently")
                    return 1
            n_features += 1
    print(f"{len(files)} batch files, {n_features} features read back unchanged by SAEDashboard")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(check(Path(sys.argv[1])))
