"""Structured output: every output of the real SmolLM2 validates against its schema, greedy and sampled."""
from __future__ import annotations

import pydantic
import pytest

from temper.prompts.structured import StructuredOutputError, generate_structured, validate_output

PERSON = {
    "type": "object",
    "properties": {
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["student", "teacher"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["age", "tags", "ok"],
    "additionalProperties": False,
}


class City(pydantic.BaseModel):  # pydantic's default extra="ignore": the grammar still closes the object
    name: str = pydantic.Field(max_length=40)
    population: int


class Open(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str


@pytest.mark.parametrize("temperature, seed", [(0.0, None), (1.0, 3), (1.0, 11)])
def test_json_schema_outputs_validate(llm, temperature, seed):
    person = generate_structured(llm, "A person as JSON:", PERSON, max_tokens=48, temperature=temperature, seed=seed)
    assert set(person) == {"age", "tags", "ok"} and 0 <= person["age"] <= 120  # jsonschema also validated it


def test_pydantic_model(llm):
    messages = [{"role": "user", "content": "Give one city as JSON with its name and population."}]
    city = generate_structured(llm, messages, City, max_tokens=48)
    assert isinstance(city, City) and city.name


def test_pydantic_schema_is_closed_unless_extra_fields_are_allowed():
    from temper.prompts.structured import schema_of
    assert schema_of(City)["additionalProperties"] is False
    assert schema_of(Open)["additionalProperties"] is True  # pydantic says so itself
    assert "additionalProperties" not in schema_of({"type": "object", "properties": {}})  # a dict is used as given


def test_invalid_outputs_raise():
    with pytest.raises(StructuredOutputError, match="cut off by max_tokens"):
        validate_output('{"age": 3', PERSON, finish_reason="length")
    with pytest.raises(StructuredOutputError, match="not valid JSON"):
        validate_output('{"age": 3', PERSON)
    with pytest.raises(StructuredOutputError, match=r"does not validate against the schema: 130 is greater"):
        validate_output('{"age": 130, "tags": [], "ok": true}', PERSON)
    with pytest.raises(StructuredOutputError, match="does not validate as City"):
        validate_output('{"name": "Oslo"}', City)
    with pytest.raises(TypeError, match="JSON schema dict or a pydantic model class"):
        generate_structured(None, "x", "not a schema")
