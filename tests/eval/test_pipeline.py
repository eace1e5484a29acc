"""`temper pipeline`: the recipe is checked before anything runs, finished steps are skipped, the report is made
from the result sets. (The steps themselves are tested where they live: tests/safety/test_cai_pipeline.py,
tests/quant, tests/rag, tests/eval/test_eval.py; `make demo` runs them all for real, docs/eval.md.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from temper.eval.pipeline import Pipeline, PipelineError, read_config
from tests.eval.test_report import three_results

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "smollm2-production.yaml"


def test_the_production_recipe_reads_and_overrides_apply():
    cfg = read_config(RECIPE, ["output_dir=/tmp/x", "eval.options.safety.harmful=5"])
    assert cfg["output_dir"] == "/tmp/x" and cfg["eval"]["options"]["safety"]["harmful"] == 5
    assert cfg["align"]["set"] == {"rlaif": False, "evaluate": False}
    assert Path(cfg["align"]["config"]).name == "smollm2-constitutional.yaml"
    assert set(cfg["eval"]["suites"]) == {"safety", "instructions", "rag", "quality", "speed"}


def test_a_recipe_without_a_step_is_refused(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\nbase_model: smollm2-135m-instruct\noutput_dir: out\n")
    with pytest.raises(PipelineError, match="missing key 'align'"):
        read_config(bad)
    with pytest.raises(PipelineError, match="does not exist"):
        read_config(tmp_path / "nope.yaml")


def test_finished_steps_are_skipped_and_the_report_is_written(tmp_path):
    out = tmp_path / "run"
    (out / "results").mkdir(parents=True)
    files = []
    for r in three_results():
        f = out / "results" / f"{r['label']}.json"
        f.write_text(json.dumps(r))
        files.append(str(f))
    model = tmp_path / "model"
    model.mkdir()
    steps = {"align": {"output": str(model)}, "quantize": {"output": str(model)},
             "rag": {"output": {"store": "s", "collection": "c"}}}
    labels = {"base": files[0], "aligned": files[1], "int4": files[2]}
    for key, f in labels.items():
        steps[f"eval:{key}"] = {"output": f}
    steps["eval:served"] = {"output": files[2]}
    (out / "pipeline.json").write_text(json.dumps({"steps": steps}))
    cfg = read_config(RECIPE, [f"output_dir={out}", "eval.labels={}", "serve.label=" + three_results()[-1]["label"]])
    summary = Pipeline(cfg, str(RECIPE)).run()
    html = Path(summary["report"]["html"]).read_text()
    assert all(r["label"] in html for r in three_results())
    assert Path(summary["report"]["card"]).read_text().startswith("#")
    state = json.loads((out / "pipeline.json").read_text())
    assert set(state["steps"]) == set(steps) | {"report"}  # nothing else ran
