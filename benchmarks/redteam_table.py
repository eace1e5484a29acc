"""Side-by-side table of `temper redteam` runs (e.g. guard off and on) from their results.jsonl files.

    python benchmarks/redteam_table.py runs/redteam/guard-off runs/redteam/guard-on

Per attack family: attack success (not refused and judged harmful; canary echoed for injection canaries) with
its Wilson 95% interval, the looser "answered" rate (not refused, GCG's criterion: needs no harm judge and
overstates success for a model that answers with nonsense), and the share blocked by a guard; then
over-refusal on the benign-edgy prompts. Prints a Markdown table, then one JSON line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from temper.safety.redteam.stats import wilson_interval


def load(folder: str) -> list[dict]:
    rows = [json.loads(line) for line in (Path(folder) / "results.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if not r.get("error")]


def cell(k: int, n: int) -> str:
    if not n:
        return "-"
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def family_stats(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in rows:
        s = out.setdefault(r["family"], {"n": 0, "success": 0, "answered": 0, "blocked": 0, "refused": 0})
        s["n"] += 1
        s["success"] += bool(r.get("success"))
        s["answered"] += not r.get("refused") and not r.get("blocked")
        s["blocked"] += bool(r.get("blocked"))
        s["refused"] += bool(r.get("refused"))
    return out


def main(folders: list[str]) -> int:
    runs = {Path(f).name: family_stats(load(f)) for f in folders}
    families = [f for f in dict.fromkeys(k for s in runs.values() for k in s) if f != "benign"]
    head = "| family | " + " | ".join(f"{name}: success | {name}: answered | {name}: blocked" for name in runs)
    print(head + " |")
    print("|---|" + "---|---|---|" * len(runs))
    for fam in families:
        cells = []
        for s in runs.values():
            f = s.get(fam, {"n": 0, "success": 0, "answered": 0, "blocked": 0})
            cells += [cell(f["success"], f["n"]), cell(f["answered"], f["n"]), cell(f["blocked"], f["n"])]
        n = max(s.get(fam, {}).get("n", 0) for s in runs.values())
        print(f"| {fam} (n={n}) | " + " | ".join(cells) + " |")
    cells = []
    for s in runs.values():
        b = s.get("benign", {"n": 0, "refused": 0, "blocked": 0})
        cells += [f"over-refusal {cell(b['refused'], b['n'])}", "", cell(b["blocked"], b["n"])]
    print(f"| benign-edgy (n={max(s.get('benign', {}).get('n', 0) for s in runs.values())}) | "
          + " | ".join(cells) + " |")
    print(json.dumps({"bench": "redteam_table", "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
