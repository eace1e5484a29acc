"""`temper eval`: the suites on a real (tiny or packaged) model, in process and through a real `temper serve`.

The tiny model is random (2 layers) with SmolLM2's tokenizer, so the suites run in seconds; the endpoint tests
start the real server in a child process, as the speed suite and the pipeline do, and check that what the
endpoint measures agrees with the same weights measured in process.
"""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from temper.errors import TemperError
from temper.eval import identity as I
from temper.eval.runner import evaluate, parse_sets, parse_suites, summary_table
from temper.eval.suites import SUITES, rate
from temper.eval.suites.speed import LocalServer
from temper.eval.target import EndpointTarget, LocalTarget, TargetError
from temper.stats import wilson_interval
from tests.align.conftest import tiny_model
from tests.safety.conftest import guard_models  # noqa: F401  (the trained guard heads, cached)

CORPUS = pytest.importorskip("temper.quant.corpus").corpus_available()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from temper.models.loader import converted_folder, save_pretrained
    from temper.models.registry import resolve
    from temper.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(converted_folder(resolve("smollm2-135m-instruct")))
    model = tiny_model(tok.vocab_size, max_positions=2048)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_pretrained(model, tok, folder)
    (folder / I.PROVENANCE_FILE).write_text(json.dumps({"base_model": "random", "license": "MIT",
                                                        "recipe": {"name": "test", "stages": [{"stage": "init"}]}}))
    return folder, sum(p.numel() for p in model.parameters())


def test_suite_and_option_parsing_explain_mistakes():
    assert parse_suites("all") == list(SUITES)
    assert parse_suites("speed, safety") == ["speed", "safety"]
    with pytest.raises(TemperError, match="unknown suite.*speeed"):
        parse_suites("safety,speeed")
    assert parse_sets(["safety.harmful=50", "speed.levels=[1, 8]", "rag.collection=docs"]) == {
        "safety": {"harmful": 50}, "speed": {"levels": [1, 8]}, "rag": {"collection": "docs"}}
    with pytest.raises(TemperError, match="SUITE.KEY=VALUE"):
        parse_sets(["harmful=50"])
    with pytest.raises(TemperError, match="no suite 'safty'"):
        parse_sets(["safty.harmful=5"])


def test_rate_is_a_proportion_with_its_wilson_interval():
    m = rate([True, False, False, True, False], "x", False)
    lo, hi = wilson_interval(2, 5)
    assert m["value"] == 0.4 and m["n"] == 5 and m["ci95"] == [round(lo, 4), round(hi, 4)]
    assert m["higher_is_better"] is False and m["unit"] == "ratio"
    assert rate([], "x", True)["value"] is None


def test_identity_hashes_the_weights_and_reads_the_provenance(tiny_folder):
    folder, _ = tiny_folder
    ident = I.model_identity(str(folder))
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert ident["sha256"] == hashlib.sha256(b"model.safetensors\0" + digest.encode()).hexdigest()
    assert ident["weight_bytes"] == (folder / "model.safetensors").stat().st_size
    assert ident["license"] == "MIT" and ident["recipe"]["stages"] == [{"stage": "init"}]
    assert ident["quantization"] is None
    reg = I.model_identity("smollm2-135m-instruct")
    assert reg["license"] == "Apache-2.0" and reg["sha256"] and reg["path"].endswith(".gguf")


def test_local_suites_write_a_result_set_and_resume(tiny_folder, tmp_path, guard_models):  # noqa: F811
    from temper.safety.judges import SafetyJudge

    folder, params = tiny_folder
    out = tmp_path / "tiny.json"
    target = LocalTarget(str(folder), kv_cache_memory=64 * 2**20)
    options = {"instructions": {"limit": 4, "max_tokens": 8},
               "safety": {"harmful": 3, "benign": 3, "max_tokens": 8, "judge": SafetyJudge(guard_models)},
               "quality": {"tokens": 600, "seq_len": 256},
               "rag": {"store": str(tmp_path / "empty.sqlite"), "collection": "nothing"}}
    result = evaluate(target, ["instructions", "safety", "quality", "rag"], options, "tiny", out,
                      I.model_identity(str(folder)))
    saved = json.loads(out.read_text())
    assert saved["schema"] == "temper-eval/1" and saved["label"] == "tiny"
    assert saved["identity"]["parameters"] == params
    assert saved["machine"]["cores"] >= 1 and saved["versions"]["torch"] == torch.__version__
    s = saved["suites"]
    assert s["instructions"]["status"] == "ok" and s["instructions"]["metrics"]["verifiable_strict"]["n"] == 4
    safety = s["safety"]["metrics"]
    assert safety["harmful_compliance"]["n"] == 3 and safety["benign_answered"]["n"] == 3
    assert safety["over_refusal"]["n"] > 0  # every held-out benign-edgy prompt
    assert {r["kind"] for r in s["safety"]["samples"]} == {"harmful", "edgy", "benign"}
    # the collection is not in the store: recorded as skipped with the fix, not an error
    assert s["rag"]["status"] == "skipped" and "temper rag ingest" in s["rag"]["reason"]
    if CORPUS:
        ppl = s["quality"]["metrics"]["perplexity"]
        assert ppl["n"] == 600 and 1 < ppl["value"] < 2 * 49152  # a random model: near the vocabulary size
    else:
        assert s["quality"]["status"] == "skipped" and "python3.11-doc" in s["quality"]["reason"]
    assert "verifiable instructions (strict)" in summary_table(result)

    # --resume keeps what finished for the same weights and runs only what is missing
    again = evaluate(LocalTarget(str(folder), kv_cache_memory=64 * 2**20), ["instructions", "safety"], options,
                     "tiny", out, I.model_identity(str(folder)), resume=True)
    assert again["suites"]["instructions"] == s["instructions"]
    assert again["created"] == saved["created"]


def test_a_failing_suite_is_recorded_and_the_others_still_run(tmp_path):
    target = LocalTarget(str(tmp_path / "no-such-model"))
    result = evaluate(target, ["instructions"], {}, "broken", tmp_path / "b.json")
    entry = result["suites"]["instructions"]
    assert entry["status"] == "error" and "no-such-model" in entry["reason"]
    assert json.loads((tmp_path / "b.json").read_text())["suites"]["instructions"]["status"] == "error"


def test_endpoint_that_is_down_gets_a_clear_error():
    with pytest.raises(TargetError, match="is the server up"):
        EndpointTarget("http://127.0.0.1:9/v1")


@pytest.fixture(scope="module")
def smol_endpoint(tmp_path_factory):
    """The default model behind a real `temper serve` in a child process."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = LocalServer("smollm2-135m-instruct", None, 0.25, log, max_model_len=2048)
    try:
        server.wait(300)
    except RuntimeError as e:
        server.stop()
        pytest.fail(f"{e}: {log.read_text()[-2000:]}")
    yield server
    server.stop()


@pytest.mark.skipif(not CORPUS, reason="the held-out corpus needs Debian's python3.11-doc (`.ci/run` installs it)")
def test_endpoint_perplexity_agrees_with_the_same_weights_in_process(smol_endpoint):
    target = EndpointTarget(smol_endpoint.url + "/v1")
    assert target.model == "smollm2-135m-instruct"
    opts = {"quality": {"tokens": 1024, "seq_len": 512}}
    served = evaluate(target, ["quality"], opts, "served")["suites"]["quality"]
    local = evaluate(LocalTarget("smollm2-135m-instruct", kv_cache_memory=128 * 2**20), ["quality"], opts,
                     "local")["suites"]["quality"]
    a, b = served["metrics"]["perplexity"]["value"], local["metrics"]["perplexity"]["value"]
    # the endpoint re-tokenizes the same text: a few tokens differ at window edges, nothing more
    assert abs(math.log(a / b)) < 0.03, (a, b)
    assert abs(served["metrics"]["perplexity"]["n"] - 1022) <= 8


def test_speed_through_the_endpoint_is_consistent(smol_endpoint):
    target = EndpointTarget(smol_endpoint.url + "/v1")
    opts = {"speed": {"levels": [1, 2], "requests": 2, "max_tokens": 6, "input_words": 16, "price_per_hour": 0.5}}
    speed = evaluate(target, ["speed"], opts, "served")["suites"]["speed"]
    assert speed["status"] == "ok", speed.get("reason")
    levels = speed["details"]["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 2] and all(lv["completed"] == 2 for lv in levels)
    m = speed["metrics"]
    best = max(lv["output_throughput"] for lv in levels)
    assert m["output_tok_s_max"]["value"] == pytest.approx(best, abs=0.01)
    assert m["usd_per_million_output_tokens"]["value"] == pytest.approx(0.5 / (3600 * best) * 1e6, rel=1e-3)
    assert m["ttft_p50_ms"]["value"] > 0 and m["tpot_p50_ms"]["value"] > 0
    assert m["rss_bytes"]["value"] > 100 * 2**20  # from the server's /metrics (process_resident_memory_bytes)


def test_speed_starts_temper_serve_for_a_local_model(tiny_folder, tmp_path):
    folder, _ = tiny_folder
    opts = {"speed": {"levels": [2], "requests": 2, "max_tokens": 4, "input_words": 8, "log_dir": str(tmp_path),
                      "kv_cache_memory_gib": 0.05, "max_model_len": 512}}
    speed = evaluate(LocalTarget(str(folder)), ["speed"], opts, "tiny")["suites"]["speed"]
    assert speed["status"] == "ok", speed.get("reason")
    assert speed["details"]["server"].startswith("started here")
    assert speed["details"]["peak_rss_bytes"] >= speed["metrics"]["rss_bytes"]["value"] > 0
    log = (tmp_path / "speed-server.log").read_text()  # the server's own log: one warm-up and the measured requests
    assert "Uvicorn running on http://127.0.0.1:" in log
    assert log.count('"path": "/v1/chat/completions", "status": 200') == 1 + 2
