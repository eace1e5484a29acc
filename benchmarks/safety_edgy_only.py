"""The "edgy only" experiment of docs/safety.md: guard heads trained with the project-written benign-edgy prompts
but without the written harmful rephrasings (heads format 3 uses both), into a folder of their own.

    python benchmarks/safety_edgy_only.py /tmp/guard-edgy-only          # ~8.5 minutes on 2 cores
    temper safety eval --models /tmp/guard-edgy-only
    (cat temper/safety/policies/default.yaml; echo "models: /tmp/guard-edgy-only") > /tmp/edgy-only.yaml
    GUARD_ONLY=1 POLICY=/tmp/edgy-only.yaml OUT=runs/redteam-edgy-only bash benchmarks/redteam.sh

The cached default heads are not touched.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from temper.safety import classifiers, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="where the heads are written")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    data.written_harmful_rephrasings = list  # this process only: no rephrasings in the train split
    print(classifiers.train(args.folder))


if __name__ == "__main__":
    main()
