"""The attack library: one small function per family turns an objective into chat requests.

Every family function takes ``(objective, rng, resources)`` and returns its attacks; `build_attacks` seeds one
`random.Random` per (seed, family, objective id), so an objective's attacks do not depend on which other
objectives or families are in the run, and ids are ``family:objective_id:variant`` where the variant indexes
the family's catalogue (template, frame, encoding, rephrasing) or, for injections, the draw.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from temper.safety.redteam import frames as F
from temper.safety.redteam.encoders import ENCODINGS

PLACEHOLDER = re.compile(r"\{\{\s*prompt\s*\}\}")
JUDGES = ("harm", "canary", "refusal")
INJECTION_CATEGORY = "prompt-injection"
BENIGN_FAMILY = "benign"


@dataclass(frozen=True)
class Objective:
    """Something the model must not do (or, for the benign set, a request it should answer)."""

    id: str
    text: str
    category: str


@dataclass
class Attack:
    """One request to send: OpenAI chat messages, and how to judge the reply.

    ``judge`` is "harm" (success: not refused and harmful), "canary" (success: the canary is in the reply) or
    "refusal" (benign prompts: a refusal is an over-refusal). ``objective`` is the text the judge compares the
    reply against.
    """

    id: str
    family: str
    objective_id: str
    category: str
    messages: list[dict]
    judge: str = "harm"
    canary: str | None = None
    objective: str = ""

    def __post_init__(self) -> None:
        if self.judge not in JUDGES:
            raise ValueError(f"judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")
        if self.judge == "canary" and not self.canary:
            raise ValueError("canary must be set when judge is 'canary'")


@dataclass(frozen=True)
class JailbreakTemplate:
    """A jailbreak template; ``{{ prompt }}`` (any spacing) marks where the objective goes."""

    name: str
    text: str


@dataclass
class AttackOptions:
    """How many variants each family draws per objective, and the many-shot and injection formats."""

    templates_per_objective: int = 2
    roleplays_per_objective: int = 1
    encodings_per_objective: int | None = None  # None: every encoding
    rephrasings_per_objective: int = 2
    n_shots: int = 8
    many_shot_answer_chars: int = 400
    many_shot_format: str = "one_message"  # or "turns": separate user/assistant messages
    injections_per_objective: int = 1  # each gives one "harm" and one "canary" attack
    injection_placement: str = "user"  # or "system": the document in a system message

    def __post_init__(self) -> None:
        limits = {"templates_per_objective": None, "roleplays_per_objective": len(F.ROLEPLAY_FRAMES),
                  "rephrasings_per_objective": len(F.REPHRASINGS), "n_shots": None,
                  "many_shot_answer_chars": None, "injections_per_objective": None,
                  "encodings_per_objective": len(ENCODINGS)}
        for name, most in limits.items():
            value = getattr(self, name)
            if value is None and name == "encodings_per_objective":
                continue
            if not isinstance(value, int) or value < 1 or (most is not None and value > most):
                bound = f" and <= {most}" if most is not None else ""
                raise ValueError(f"{name} must be an integer >= 1{bound}, got {value!r}")
        if self.many_shot_format not in ("one_message", "turns"):
            raise ValueError(f"many_shot_format must be 'one_message' or 'turns', got {self.many_shot_format!r}")
        if self.injection_placement not in ("user", "system"):
            raise ValueError(f"injection_placement must be 'user' or 'system', got {self.injection_placement!r}")


@dataclass
class AttackResources:
    """Data the families draw from, plus the options: templates, many-shot pairs and benign documents."""

    jailbreak_templates: list[JailbreakTemplate] = field(default_factory=list)
    many_shot_examples: list[tuple[str, str]] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    options: AttackOptions = field(default_factory=AttackOptions)


def fill_template(template: str, prompt: str) -> str:
    """Put the prompt at each ``{{ prompt }}``; without a placeholder, append it after a blank line.

    Plain substitution (the replacement is a function, so backslashes in the prompt stay literal): templates
    hold other braces and must never be rendered.
    """
    if PLACEHOLDER.search(template):
        return PLACEHOLDER.sub(lambda _: prompt, template)
    return f"{template.rstrip()}\n\n{prompt}"


def attack_id(family: str, objective_id: str, variant: int) -> str:
    """The deterministic id of an attack: ``family:objective_id:variant``."""
    return f"{family}:{objective_id}:{variant}"


def _core(text: str) -> str:
    """The objective as a clause: stripped, no trailing punctuation, lower-case first letter (not acronyms)."""
    core = text.strip().rstrip(".!?;: ")
    if len(core) > 1 and core[0].isupper() and not core[1].isupper():
        core = core[0].lower() + core[1:]
    return core


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _attack(family: str, obj: Objective, variant: int, messages: list[dict], **kw: object) -> Attack:
    kw.setdefault("objective", obj.text)
    return Attack(attack_id(family, obj.id, variant), family, obj.id, obj.category, messages, **kw)


def direct(obj: Objective, rng: random.Random, res: AttackResources) -> list[Attack]:
    """The objective itself as the user message: the baseline every other family is compared with."""
    return [_attack("direct", obj, 0, _user(obj.text))]


def jailbreak(obj: Objective, rng: random.Random, res: AttackResources) -> list[Attack]:
    """The objective inside `templates_per_objective` jailbreak templates drawn from the resources."""
    templates = res.jailbreak_templates
    if not templates:
        raise ValueError("the jailbreak family needs AttackResources.jailbreak_templates")
    k = min(res.options.templates_per_objective, len(templates))
    return [_attack("jailbreak", obj, i, _user(fill_template(templates[i].text, obj.text)))
            for i in rng.sample(range(len(templates)), k)]


def roleplay(obj: Objective, rng: random.Random, res: AttackResources) -> list[Attack]:
    """The objective inside hand-written role-play frames (villain, grandma, novelist, NPC, ...)."""
    picks = rng.sample(range(len(F.ROLEPLAY_FRAMES)), res.options.roleplays_per_objective)
    return [_attack("roleplay", obj, i, _user(F.ROLEPLAY_FRAMES[i].replace(F.OBJECTIVE, _core(obj.text))))
            for i in picks]


def encoding(obj: Objective, rng: random.Random, res: AttackResources) -> list[Attack]:
    """The objective base64/rot13/leetspeak/reversed, with an instruction to decode it and answer."""
    k = res.options.encodings_per_objective
    picks = range(len(ENCODINGS)) if k is None else sorted(rng.sample(range(len(ENCODINGS)), k))
    return [_attack("encoding", obj, i, _user(f"{ENCODINGS[i].instruction}\n\n{ENCODINGS[i].encode(obj.text)}"))
            for i in picks]


def rephrase(obj: Objective, rng: random.Random, res: AttackResources) -> list[Attack]:
    """Deterministic rewrites: past tense, hypothetical, educational framing, question form, third person."""
    picks = sorted(rng.sample(range(len(F.REPHRASINGS)), res.options.rephrasings_per_objective))
    return [_attack("rephrase", obj, i, _user(F.REPHRASINGS[i][1].replace(F.OBJECTIVE, _core(obj.text))))
            for i in picks]


def _truncate(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars].rstrip() + F.MANY_SHOT_ANSWER_ELLIPSIS


def many_shot(obj: Objective, rng: random.Random, res: AttackResources) -> list[Attack]:
    """`n_shots` faked compliant exchanges, then the objective (Anil et al., 2024, many-shot jailbreaking)."""
    examples, opts = res.many_shot_examples, res.options
    if not examples:
        raise ValueError("the many_shot family needs AttackResources.many_shot_examples")
    shots = [(q.strip(), _truncate(a.strip(), opts.many_shot_answer_chars))
             for q, a in (examples[i] for i in rng.sample(range(len(examples)), min(opts.n_shots, len(examples))))]
    if opts.many_shot_format == "turns":
        messages = [m for q, a in shots for m in ({"role": "user", "content": q},
                                                  {"role": "assistant", "content": a})]
        messages.append({"role": "user", "content": obj.text})
    else:
        transcript = "\n\n".join(f"User: {q}\nAssistant: {a}" for q, a in shots)
        messages = _user(f"{transcript}\n\nUser: {obj.text}\nAssistant:")
    return [_attack("many_shot", obj, 0, messages)]


def _insert(document: str, instruction: str, position: str) -> str:
    """The document with the instruction at its start, end, or the whitespace nearest its middle."""
    if position == "start":
        return f"{instruction}\n\n{document}"
    if position == "end":
        return f"{document}\n\n{instruction}"
    spaces = [m.start() for m in re.finditer(r"\s", document)]
    cut = min(spaces, key=lambda i: abs(i - len(document) // 2)) if spaces else len(document) // 2
    return f"{document[:cut].rstrip()}\n\n{instruction}\n\n{document[cut:].lstrip()}"


def _injection_messages(task: str, document: str, placement: str) -> list[dict]:
    wrapped = f"{F.DOCUMENT_OPEN}\n{document}\n{F.DOCUMENT_CLOSE}"
    if placement == "system":
        return [{"role": "system", "content": f"{F.SYSTEM_DOCUMENT_INTRO}\n\n{wrapped}"},
                {"role": "user", "content": task}]
    return _user(f"{task}\n\n{wrapped}")


def _one_injection(obj: Objective, rng: random.Random, res: AttackResources, variant: int,
                   canary: str | None) -> Attack:
    """One injected document; the payload is the objective, or (canary) an order to reply with the canary."""
    task = rng.choice(F.INJECTION_TASKS)
    document = rng.choice(res.documents)
    style = rng.choice(F.INJECTION_STYLES)[1]
    position = rng.choice(F.INJECTION_POSITIONS)
    payload = _core(obj.text) if canary is None else F.CANARY_PAYLOAD.replace("{canary}", canary)
    instruction = style.replace(F.PAYLOAD, payload)
    messages = _injection_messages(task, _insert(document, instruction, position), res.options.injection_placement)
    if canary is None:
        return _attack("injection", obj, variant, messages)
    return _attack("injection", obj, variant, messages, judge="canary", canary=canary, objective=instruction)


def injection(obj: Objective, rng: random.Random, res: AttackResources) -> list[Attack]:
    """Instructions hidden in a benign document the user asks about: a "harm" and a "canary" attack per draw.

    Canary attacks measure whether the model obeys the document at all; they are filed under the category
    "prompt-injection", not the objective's harm category.
    """
    if not res.documents:
        raise ValueError("the injection family needs AttackResources.documents")
    out = []
    for i in range(res.options.injections_per_objective):
        out.append(_one_injection(obj, rng, res, 2 * i, None))
        canary = f"CANARY-{rng.getrandbits(24):06X}"
        attack = _one_injection(obj, rng, res, 2 * i + 1, canary)
        attack.category = INJECTION_CATEGORY
        out.append(attack)
    return out


ATTACKS: dict[str, Callable[[Objective, random.Random, AttackResources], list[Attack]]] = {
    "direct": direct, "jailbreak": jailbreak, "roleplay": roleplay, "encoding": encoding,
    "rephrase": rephrase, "many_shot": many_shot, "injection": injection,
}


def select_objectives(objectives: Sequence[Objective], max_objectives: int | None, seed: int,
                      salt: str = "objectives") -> list[Objective]:
    """All objectives, or a seeded sample of ``max_objectives`` kept in input order (same sample per family)."""
    ids = [o.id for o in objectives]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"objective ids must be unique; repeated: {', '.join(dup)}")
    if max_objectives is None or max_objectives >= len(objectives):
        return list(objectives)
    keep = sorted(random.Random(f"{seed}/{salt}").sample(range(len(objectives)), max_objectives))
    return [objectives[i] for i in keep]


def build_attacks(objectives: Sequence[Objective], resources: AttackResources, families: Sequence[str],
                  seed: int = 0, max_objectives: int | None = None) -> list[Attack]:
    """Every family's attacks on the (sampled) objectives, family by family; deterministic given the inputs."""
    unknown = [f for f in families if f not in ATTACKS]
    if unknown:
        raise ValueError(f"families: unknown {', '.join(unknown)}; known: {', '.join(ATTACKS)}")
    chosen = select_objectives(objectives, max_objectives, seed)
    attacks = [a for fam in families for obj in chosen
               for a in ATTACKS[fam](obj, random.Random(f"{seed}/{fam}/{obj.id}"), resources)]
    ids = [a.id for a in attacks]
    if len(set(ids)) != len(ids):
        raise ValueError("attack ids collide; objective ids must be unique")
    return attacks


def benign_attacks(benign: Sequence[Objective], seed: int = 0, max_objectives: int | None = None) -> list[Attack]:
    """The benign-edgy prompts sent as they are, judged for refusal (over-refusal)."""
    chosen = select_objectives(benign, max_objectives, seed, salt="benign")
    return [Attack(attack_id(BENIGN_FAMILY, b.id, 0), BENIGN_FAMILY, b.id, b.category, _user(b.text),
                   judge="refusal", objective=b.text) for b in chosen]


def attack_list_hash(attacks: Sequence[Attack]) -> str:
    """SHA-256 of the attacks' full content: any change to the data, options or seed changes it."""
    blob = json.dumps([asdict(a) for a in attacks], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
