"""`temper pipeline --config recipes/smollm2-production.yaml`: the whole way from the default model to a measured
endpoint, in one command (`make demo`).

Steps, each skipped when its output is already there (so an interrupted run picks up where it stopped):
1. align: Constitutional AI on the base model (temper.align.cai, with the recipe's `align` settings);
2. quantize: the aligned model to int4 (temper.quant, GPTQ on the Python docs' calibration files);
3. rag: ingest the Python documentation pages the QA sample asks about, plus the tutorial as distractors, into
   an embedded store;
4. evaluate: `temper eval` on each stage (base, aligned, int4), then `temper serve` with the int4 model, the
   guard and the store, evaluated as an endpoint (the deployment users would get);
5. report: report.html, report.md and MODEL_CARD.md from the result sets.

The output folder holds every stage's model, the result sets (`results/`), the report, the server's log and
`pipeline.json` (the steps, their seconds and what each wrote). Each model it makes gets a `temper.json` naming
its base model, licence and recipe stages, which `temper eval` records as the model's identity.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from temper.errors import TemperError
from temper.eval.identity import PROVENANCE_FILE

log = logging.getLogger(__name__)

DOCS_HTML = Path("/usr/share/doc/python3.11/html")


class PipelineError(TemperError):
    """The production recipe is invalid or a step failed."""


def read_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    from temper.align.recipe import RecipeError, read_recipe

    try:
        cfg = read_recipe(path, list(overrides))
    except RecipeError as e:
        raise PipelineError(str(e)) from None
    for key in ("name", "base_model", "output_dir", "align", "quantize", "rag", "serve", "eval"):
        if key not in cfg:
            raise PipelineError(f"{path}: missing key {key!r} (see recipes/smollm2-production.yaml)")
    return cfg


class Pipeline:
    def __init__(self, cfg: dict[str, Any], config_path: str):
        self.cfg = cfg
        self.config_path = config_path
        self.out = Path(cfg["output_dir"])
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_path = self.out / "pipeline.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.state.setdefault("steps", {})

    # ------------------------------------------------------------------ bookkeeping
    def _save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1, default=str))

    def _step(self, name: str, fn, done: bool) -> Any:
        if done:
            log.info("pipeline: %s already done, skipped", name)
            return self.state["steps"].get(name, {}).get("output")
        log.info("pipeline: %s ...", name)
        t0 = time.perf_counter()
        output = fn()
        self.state["steps"][name] = {"seconds": round(time.perf_counter() - t0, 1), "output": output}
        self._save()
        log.info("pipeline: %s done in %.0f s", name, time.perf_counter() - t0)
        return output

    def _provenance(self, model_dir: Path, stages: list[dict[str, Any]]) -> None:
        recipe = {"name": self.cfg["name"], "file": self.config_path, "command": self.cfg.get("command", "make demo"),
                  "stages": stages, "goals": self.cfg.get("goals")}
        (model_dir / PROVENANCE_FILE).write_text(json.dumps(
            {"base_model": self.cfg.get("base_model_name", self.cfg["base_model"]),
             "license": self.cfg.get("license"), "recipe": recipe}, indent=1))

    # ------------------------------------------------------------------ steps
    def align(self) -> str:
        from temper.align.cai import config_from_recipe, run_cai
        from temper.align.recipe import read_recipe

        a = self.cfg["align"]
        recipe = read_recipe(a["config"], [f"{k}={json.dumps(v)}" for k, v in (a.get("set") or {}).items()])
        recipe["model"] = self.cfg["base_model"]
        recipe["output_dir"] = str(self.out / "align")
        summary = run_cai(config_from_recipe(recipe))
        final = Path(summary["final_model"])
        stages = [{"stage": "sl-cai" if not recipe.get("rlaif") else "sl-cai + rlaif",
                   "description": a.get("description", "Constitutional AI (critique, revision, SFT)"),
                   "data": a.get("data", []),
                   "settings": {k: recipe.get(k) for k in ("red_team_prompts", "rounds", "helpful_prompts",
                                                            "edgy_prompts", "filter_revisions", "rlaif", "sft")},
                   "counts": summary.get("stages"), "seconds": summary.get("timings_s")}]
        self._provenance(final, stages)
        return str(final)

    def quantize(self, model: str) -> str:
        from temper.quant.config import QuantConfig
        from temper.quant.quantize import quantize_checkpoint

        q = self.cfg["quantize"]
        dest = self.out / "int4"
        if dest.exists():
            shutil.rmtree(dest)  # a half-written folder from an interrupted run
        config = QuantConfig(method=q.get("method", "int4-gptq"), group_size=q.get("group_size", 128),
                             symmetric=q.get("symmetric", False), head_bits=q.get("head_bits", 8))
        report = quantize_checkpoint(Path(model), dest, config, q.get("calibration_samples", 64),
                                     q.get("calibration_seq_len", 512), q.get("seed", 0), q.get("eval_tokens", 0))
        print("\n".join(report.lines()), flush=True)
        prov = json.loads((Path(model) / PROVENANCE_FILE).read_text()) if (Path(model) / PROVENANCE_FILE).exists() \
            else {"recipe": {"stages": []}}
        stages = prov["recipe"]["stages"] + [{"stage": config.method, "description": q.get(
            "description", "weight-only quantization"), "data": ["python3.11-doc calibration files"]
            if config.method == "int4-gptq" else [], "settings": {"group_size": config.group_size,
                                                                  "head_bits": config.head_bits}}]
        self._provenance(dest, stages)
        return str(dest)

    def rag(self) -> dict[str, Any]:
        from temper.rag.ingest import Ingestor
        from temper.rag.qaset import load_qa
        from temper.rag.store import open_store

        r = self.cfg["rag"]
        if not DOCS_HTML.is_dir():
            raise PipelineError(f"{DOCS_HTML} is missing: apt-get install python3.11-doc")
        pages = []
        for it in load_qa():
            if it.answerable and it.source not in pages:
                pages.append(it.source)
            if len(pages) >= r.get("pages", 24):
                break
        extra = [str(p.relative_to(DOCS_HTML)) for g in r.get("extra", []) for p in sorted(DOCS_HTML.glob(g))]
        corpus = self.out / "rag" / "corpus"
        if corpus.exists():
            shutil.rmtree(corpus)
        for rel in dict.fromkeys(pages + extra):
            dst = corpus / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DOCS_HTML / rel, dst)
        store_path = self.out / "rag" / "store.sqlite"
        store = open_store(str(store_path))
        try:
            report = Ingestor(store).ingest([corpus], r["collection"], base_url=r.get("base_url"),
                                            progress=sys.stderr.isatty())
        finally:
            store.close()
        print(report.summary(), flush=True)
        if report.errors:
            raise PipelineError(f"ingestion errors: {report.errors[:3]}")
        return {"store": str(store_path), "collection": r["collection"], "pages": len(dict.fromkeys(pages + extra))}

    def evaluate(self, label: str, model: str, quantization: str | None = None) -> str:
        from temper.eval.identity import model_identity
        from temper.eval.runner import _safe, evaluate, summary_table
        from temper.eval.target import LocalTarget

        e = self.cfg["eval"]
        out = self.out / "results" / f"{_safe(label)}.json"
        target = LocalTarget(model, quantization)
        result = evaluate(target, e["suites"], self._options(), label, out, model_identity(model, quantization),
                          resume=True)
        target.close()
        print(summary_table(result), flush=True)
        return str(out)

    def _options(self) -> dict[str, dict[str, Any]]:
        e = self.cfg["eval"]
        opts = {k: dict(v) for k, v in (e.get("options") or {}).items()}
        rag = self.state["steps"].get("rag", {}).get("output") or {}
        opts.setdefault("rag", {}).update({"store": rag.get("store"), "collection": rag.get("collection")})
        opts.setdefault("speed", {})["log_dir"] = str(self.out / "results")
        return opts

    def serve_and_evaluate(self, model: str) -> str:
        from temper.eval.identity import model_identity
        from temper.eval.runner import _safe, evaluate, summary_table
        from temper.eval.suites.speed import LocalServer
        from temper.eval.target import EndpointTarget

        s = self.cfg["serve"]
        rag = self.state["steps"]["rag"]["output"]
        name = s.get("served_model_name", self.cfg["name"])
        server = LocalServer(model, None, s.get("kv_cache_memory_gib", 1.0), self.out / "serve.log",
                             extra=["--guard", s.get("guard", "default"), "--rag-store", rag["store"],
                                    "--served-model-name", name])
        try:
            server.wait(s.get("startup_timeout", 600))
            target = EndpointTarget(server.url + "/v1", name, guard=s.get("guard", "default"),
                                    rag_collection=rag["collection"])
            label = s.get("label", "served")
            out = self.out / "results" / f"{_safe(label)}.json"
            result = evaluate(target, self.cfg["eval"]["suites"], self._options(), label, out,
                              model_identity(model), resume=True)
            print(summary_table(result), flush=True)
        finally:
            server.stop()
        return str(out)

    def report(self, results: list[str]) -> dict[str, str]:
        from temper.eval.report import load_results, model_card, write_report

        rep = self.cfg.get("report") or {}
        sets = load_results(results)
        card_label = rep.get("card_label", self.cfg["serve"].get("label", "served"))
        card = model_card(sets, card_label)
        card_path = self.out / "MODEL_CARD.md"
        card_path.write_text(card)
        html, md = self.out / "report.html", self.out / "report.md"
        write_report(sets, html, md, card_path=card_path, title=rep.get("title", f"temper: {self.cfg['name']}"))
        return {"html": str(html), "markdown": str(md), "card": str(card_path)}

    # ------------------------------------------------------------------ all of it
    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.state["config"] = self.cfg
        self.state["started"] = self.state.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        steps = self.state["steps"]

        def done(name: str) -> bool:
            out = steps.get(name, {}).get("output")
            return bool(out) and (not isinstance(out, str) or Path(out).exists())

        aligned = self._step("align", self.align, done("align"))
        int4 = self._step("quantize", lambda: self.quantize(aligned), done("quantize"))
        self._step("rag", self.rag, done("rag"))
        results = []
        labels = self.cfg["eval"].get("labels", {})
        for key, model, q in (("base", self.cfg["base_model"], None), ("aligned", aligned, None), ("int4", int4, None)):
            label = labels.get(key, key)
            results.append(self._step(f"eval:{label}", lambda m=model, lab=label, qq=q: self.evaluate(lab, m, qq),
                                      done(f"eval:{label}")))
        results.append(self._step("eval:served", lambda: self.serve_and_evaluate(int4), done("eval:served")))
        files = self._step("report", lambda: self.report(results), False)
        self.state["seconds_this_run"] = round(time.perf_counter() - t0, 1)
        self.state["seconds_total"] = round(sum(s.get("seconds", 0) for s in steps.values()), 1)
        self._save()
        return {"report": files, "results": results, "seconds_total": self.state["seconds_total"]}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("pipeline", help="run an end-to-end recipe: align -> int4 -> serve with guard and RAG -> "
                                        "evaluate -> report", description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", default="recipes/smollm2-production.yaml", help="the recipe (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set output_dir=/tmp/demo --set eval.options.safety.harmful=20")
    p.add_argument("--restart", action="store_true", help="forget finished steps and run everything again")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = read_config(args.config, args.set)
    if args.restart and (Path(cfg["output_dir"]) / "pipeline.json").exists():
        (Path(cfg["output_dir"]) / "pipeline.json").unlink()
    summary = Pipeline(cfg, args.config).run()
    print(json.dumps(summary))
    print(f"report: {summary['report']['html']} (Markdown: {summary['report']['markdown']}, "
          f"model card: {summary['report']['card']}); {summary['seconds_total'] / 60:.1f} min of steps in all")
    return 0

