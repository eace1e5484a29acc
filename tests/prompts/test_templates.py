"""Templates: declared variables checked at definition and at render, the sandbox, and the YAML registry."""
from __future__ import annotations

import pytest

from temper.prompts.templates import PromptRegistry, PromptTemplate, PromptTemplateError, load_yaml


def make(template: str, variables=("question",), **kw) -> PromptTemplate:
    return PromptTemplate(name="t", version=1, variables=variables, template=template, **kw)


def test_render_text_and_chat():
    assert make("Q: {{ question }}\nA:").render(question="2+2?") == "Q: 2+2?\nA:"
    chat = PromptTemplate(name="c", version=1, variables=("topic",),
                          messages=[{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Tell me about {{ topic }}."}])
    assert chat.is_chat
    assert chat.render(topic="owls") == [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Tell me about owls."}]


def test_render_names_missing_and_extra_variables():
    t = make("{{ question }} {{ context }}", variables=("question", "context"))
    with pytest.raises(PromptTemplateError, match=r"missing \['context'\], extra \['typo'\]"):
        t.render(question="q", typo="x")
    with pytest.raises(PromptTemplateError, match=r"missing \['context', 'question'\], extra \[\]"):
        t.render()


def test_declaration_must_match_the_template():
    with pytest.raises(PromptTemplateError, match=r"used but not declared \['context'\], declared but unused \[\]"):
        make("{{ question }} {{ context }}")
    with pytest.raises(PromptTemplateError, match=r"used but not declared \[\], declared but unused \['extra'\]"):
        make("{{ question }}", variables=("question", "extra"))
    # loop variables and `set` names are the template's own, not inputs
    make("{% for e in examples %}{{ e }}{% endfor %}{% set x = 1 %}{{ x }}", variables=("examples",))


@pytest.mark.parametrize("source", ["{{ ''.__class__ }}", "{{ ''.__class__.__mro__ }}",
                                    "{{ question.__class__.__init__.__globals__ }}", "{{ question.__len__() }}"])
def test_sandbox_blocks_attribute_access(source):
    variables = ("question",) if "question" in source else ()
    with pytest.raises(PromptTemplateError, match="blocked by the sandbox: access to attribute .* is unsafe"):
        make(source, variables=variables).render(**{v: "x" for v in variables})


def test_malformed_templates():
    with pytest.raises(PromptTemplateError, match="syntax error"):
        make("{{ question ")
    with pytest.raises(PromptTemplateError, match="exactly one of"):
        PromptTemplate(name="t", version=1, variables=())
    with pytest.raises(PromptTemplateError, match="version must be an integer"):
        PromptTemplate(name="t", version=0, variables=(), template="x")
    with pytest.raises(PromptTemplateError, match="role and content"):
        PromptTemplate(name="t", version=1, variables=(), messages=[{"role": "user", "text": "x"}])


YAML = """
- name: gsm8k-direct
  version: 1
  description: the question, then the answer
  variables: [question]
  template: "Q: {{ question }}\\nA: The answer is"
- name: gsm8k-direct
  version: 2
  variables: [question]
  template: "Question: {{ question }}\\nAnswer:"
"""

CHAT_YAML = """
name: summarize
version: 1
variables: [text]
messages:
  - {role: system, content: You summarize in one sentence.}
  - {role: user, content: "{{ text }}"}
"""


def test_registry_from_yaml_with_versions(tmp_path):
    (tmp_path / "gsm8k.yaml").write_text(YAML)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "chat.yml").write_text(CHAT_YAML)
    registry = PromptRegistry.from_paths(tmp_path)
    assert registry.names() == ["gsm8k-direct", "summarize"] and len(registry) == 3
    assert registry.versions("gsm8k-direct") == [1, 2]
    assert registry.get("gsm8k-direct").render(question="1+1?") == "Question: 1+1?\nAnswer:"  # latest
    assert registry.get("gsm8k-direct", 1).render(question="1+1?") == "Q: 1+1?\nA: The answer is"
    assert registry.get("gsm8k-direct", 1).description == "the question, then the answer"
    assert registry.get("summarize").render(text="t")[1] == {"role": "user", "content": "t"}
    with pytest.raises(PromptTemplateError, match=r"no version 3; known: \[1, 2\]"):
        registry.get("gsm8k-direct", 3)
    with pytest.raises(PromptTemplateError, match="no template named 'gsm8k'"):
        registry.get("gsm8k")


def test_registry_rejects_bad_files(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text(YAML + YAML.replace("version: 2", "version: 3"))
    with pytest.raises(PromptTemplateError, match="v1 is defined twice"):
        PromptRegistry.from_paths(dup)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("name: x\nversion: 1\nvariables: []\ntemplate: hi\ntemplat: typo\n")
    with pytest.raises(PromptTemplateError, match=r"unknown template fields \['templat'\]"):
        load_yaml(unknown)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(PromptTemplateError, match="not valid YAML"):  # safe_load refuses Python tags
        load_yaml(unsafe)
    with pytest.raises(PromptTemplateError, match="no such file"):
        PromptRegistry.from_paths(tmp_path / "missing")
