"""Structured output from Python: a JSON schema or a pydantic model in, a validated object out.

The engine's grammar-constrained decoding (temper/engine/structured.py, llguidance) only lets the model emit
tokens that keep the output inside the schema's grammar, so the text parses as JSON of the right shape. We still
validate the result: a completion cut off by `max_tokens` is incomplete JSON, and a grammar can be looser than a
validator on some keywords (formats, numeric bounds, patterns), so a caller gets a valid object or a clear error.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from temper.engine.sampling_params import SamplingParams, StructuredOutput
from temper.errors import TemperError

try:
    import jsonschema
except ImportError:  # optional: without it a dict result is only checked to be JSON
    jsonschema = None

try:
    import pydantic
except ImportError:
    pydantic = None


class StructuredOutputError(TemperError):
    """The model's output is not valid JSON for the schema (e.g. cut off by max_tokens), or the schema is invalid."""


def _is_model_class(schema: Any) -> bool:
    return pydantic is not None and isinstance(schema, type) and issubclass(schema, pydantic.BaseModel)


def schema_of(schema: dict[str, Any] | type) -> dict[str, Any]:
    """The JSON schema of a pydantic model class, or the schema dict itself.

    A pydantic model that does not allow extra fields (pydantic's default ignores them) gets
    `additionalProperties: false` on its objects: otherwise the grammar lets a small model add keys until
    max_tokens cuts the JSON off, and the keys would be dropped on validation anyway."""
    if _is_model_class(schema):
        out = schema.model_json_schema()
        if schema.model_config.get("extra") != "allow":
            _close_objects(out)
        return out
    if not isinstance(schema, dict):
        raise TypeError(f"expected a JSON schema dict or a pydantic model class, got {type(schema).__name__}")
    return schema


def _close_objects(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


def validate_output(text: str, schema: dict[str, Any] | type, finish_reason: str | None = None) -> Any:
    """Parse and validate one output: a model instance for a pydantic class, else the parsed JSON value."""
    if finish_reason == "length":
        raise StructuredOutputError(f"the output was cut off by max_tokens before the JSON ended: {text[:200]!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise StructuredOutputError(f"the output is not valid JSON ({e}): {text[:200]!r}") from None
    if _is_model_class(schema):
        try:
            return schema.model_validate(value)
        except pydantic.ValidationError as e:
            raise StructuredOutputError(f"the output does not validate as {schema.__name__}: {e}") from None
    if jsonschema is not None:
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as e:
            raise StructuredOutputError(f"the output does not validate against the schema: {e.message} "
                                        f"(at {list(e.absolute_path)})") from None
    return value


def generate_structured(llm, prompt, schema: dict[str, Any] | type, params: SamplingParams | None = None,
                        max_tokens: int = 256, temperature: float = 0.0, seed: int | None = None) -> Any:
    """Generate one output constrained to `schema` and return it validated.

    Args:
        llm: a temper.engine.llm.LLM.
        prompt: text, or chat messages (they go through the model's chat template).
        schema: a JSON schema dict (returns the parsed value, validated with jsonschema if it is installed) or a
            pydantic model class (returns an instance).
        params: sampling settings to start from; their `structured` field is replaced by the schema. Without them
            `max_tokens`, `temperature` and `seed` make the settings.
    Raises:
        StructuredOutputError: the schema is invalid, or the output does not validate (e.g. it was cut off).
    """
    spec = StructuredOutput(json_schema=schema_of(schema))
    if params is None:
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    if params.n != 1 or params.best_of not in (None, 1):
        raise ValueError("generate_structured returns one object: use params with n = 1")
    params = dataclasses.replace(params, structured=spec)
    try:
        out = llm.generate([prompt], params, use_tqdm=False)[0]
    except ValueError as e:
        if "schema" in str(e):
            raise StructuredOutputError(str(e)) from e
        raise
    completion = out.outputs[0]
    return validate_output(completion.text, schema, completion.finish_reason)
