"""Held-out quality and CPU latency of the guard's checks: `python -m temper.safety.evaluate` (or `temper safety eval`).

Every figure comes from the "test" split, which neither training nor threshold selection reads: precision, recall,
F1 and false-positive rate for the harm (prompt and response) and attack heads, the false-positive rate on the held-out
benign-edgy prompts, the refusal judge's accuracy on pyrit's labelled set (which it never fits), the PII detector on
its synthetic set, and the median and p95 milliseconds per message of each check on this machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from temper.safety import data
from temper.safety.classifiers import GuardModels, training_sets


def binary_metrics(pred: Sequence[bool], gold: Sequence[int]) -> dict[str, float]:
    """precision, recall, F1, false-positive rate and counts of boolean predictions against 0/1 labels."""
    tp = sum(p and g == 1 for p, g in zip(pred, gold))
    fp = sum(p and g == 0 for p, g in zip(pred, gold))
    fn = sum((not p) and g == 1 for p, g in zip(pred, gold))
    tn = sum((not p) and g == 0 for p, g in zip(pred, gold))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "fpr": fp / (fp + tn) if fp + tn else 0.0,
            "n_pos": tp + fn, "n_neg": fp + tn, "tp": tp, "fp": fp}


def latency_ms(fn: Callable[[str], object], texts: Sequence[str], repeats: int = 1) -> dict[str, float]:
    """Median and p95 wall milliseconds of fn on one message at a time (cold cache: each text once)."""
    times = []
    for _ in range(repeats):
        for t in texts:
            start = time.perf_counter()
            fn(t)
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))], "n": len(times)}


def evaluate_heads(models: GuardModels, sharegpt: int = 3000) -> dict[str, dict]:
    """Test-split metrics of each binary head (decoded views on for harm_prompt, as the guard runs it)."""
    out: dict[str, dict] = {}
    edgy = data.benign_edgy_prompts("test")
    for name, (texts, labels, weights) in training_sets("test", sharegpt).items():
        keep = [i for i, w in enumerate(weights) if w == 1.0]  # edgy prompts are reported on their own
        verdicts = models.score(name, [texts[i] for i in keep], decode=name == "harm_prompt")
        out[name] = binary_metrics([v.flagged for v in verdicts], [labels[i] for i in keep])
        out[name]["threshold"] = models.thresholds[name]
        if name != "harm_response":
            flagged = [v.flagged for v in models.score(name, [p.text for p in edgy], decode=name == "harm_prompt")]
            out[name]["edgy_fpr"] = sum(flagged) / len(flagged)
            out[name]["edgy_flagged"] = [p.text for p, f in zip(edgy, flagged) if f]
    return out


def evaluate_categories(models: GuardModels) -> dict[str, float]:
    """Agreement of the category head with the keyword/intent labels on the harmful test prompts."""
    test = data.harmful_prompts("test")
    hits = sum(models.category(p.text) == p.category for p in test)
    return {"accuracy": hits / len(test), "n": len(test)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="temper safety eval", description=__doc__)
    parser.add_argument("--models", default=None, help="folder of trained heads (default: the cache)")
    parser.add_argument("--sharegpt", type=int, default=3000, help="ShareGPT prompts in the benign side")
    parser.add_argument("-o", "--output", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    models = GuardModels.load(args.models)
    results: dict[str, object] = {"heads": evaluate_heads(models, args.sharegpt),
                                  "category": evaluate_categories(models)}
    from temper.safety.refusal import RefusalJudge, evaluate_refusal
    judge = RefusalJudge(models.encoder, models.thresholds.get("offtopic"))
    results["refusal"] = evaluate_refusal(judge)
    from temper.safety import pii_eval
    results["pii"] = pii_eval.evaluate(pii_eval.synthetic_examples(500, 0))
    results["latency"] = _latencies(models, judge)
    _print(results)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps({k: {"f1": v["f1"], "fpr": v["fpr"], "edgy_fpr": v.get("edgy_fpr")}
                      for k, v in results["heads"].items()} | {"refusal_accuracy": results["refusal"]["accuracy"]}))
    return 0


def _latencies(models: GuardModels, judge) -> dict[str, dict]:
    from temper.safety import pii
    short = [p.text for p in data.benign_prompts("test", sharegpt=0)][:100]
    long = [p.text for p in data.wild_jailbreaks("test")][:40]
    replies = [p.text for p in data.benign_answers(sharegpt=200) if data.split_of(p.text) == "test"][:60]
    models.encoder.encode(["warm up"])

    def fresh(fn):  # each timing starts from an empty embedding cache, as a new message does
        def run(t):
            models.encoder.clear_cache()
            return fn(t)
        return run
    return {
        "harm_prompt short": latency_ms(fresh(lambda t: models.score("harm_prompt", [t], decode=True)), short),
        "attack short": latency_ms(fresh(lambda t: models.score("attack", [t])), short),
        "attack long jailbreak": latency_ms(fresh(lambda t: models.score("attack", [t])), long),
        "harm_response reply": latency_ms(fresh(lambda t: models.score("harm_response", [t])), replies),
        "refusal reply": latency_ms(fresh(lambda t: judge.judge_one("How do I do this?", t)), replies),
        "pii short": latency_ms(pii.detect, short),
    }


def _print(results: dict) -> None:
    print(f"{'check':<16}{'precision':>10}{'recall':>8}{'F1':>7}{'FPR':>7}{'edgy FPR':>10}{'n+':>6}{'n-':>6}")
    for name, m in results["heads"].items():
        edgy = f"{m['edgy_fpr']:.3f}" if "edgy_fpr" in m else "-"
        print(f"{name:<16}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}{m['fpr']:>7.3f}{edgy:>10}"
              f"{m['n_pos']:>6}{m['n_neg']:>6}")
    r = results["refusal"]
    print(f"refusal judge: accuracy {r['accuracy']:.3f} on {r['n']} labelled replies "
          f"(precision {r['precision']:.3f}, recall {r['recall']:.3f})")
    print(f"category head: {results['category']['accuracy']:.3f} agreement on {results['category']['n']} prompts")
    print(f"PII: {json.dumps(results['pii'].get('overall', results['pii']))}")
    for name, lat in results["latency"].items():
        print(f"latency {name:<24} p50 {lat['p50_ms']:6.1f} ms   p95 {lat['p95_ms']:6.1f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
