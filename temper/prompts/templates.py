"""Versioned prompt templates: jinja2 in a sandbox, declared variables, and a registry loaded from YAML files.

A template declares its variables; the declaration is checked against the variables the jinja source reads when
the template is made, and every render checks the caller's values against it, so a typo fails loudly instead of
rendering an empty string into a prompt. Templates run in jinja2's SandboxedEnvironment: a template file is
data, and `{{ ''.__class__.__mro__ }}` must not reach Python internals.

A YAML file holds one template or a list of them:

    name: gsm8k-direct
    version: 2
    description: answer a grade-school math question directly
    variables: [question]
    template: "Q: {{ question }}\\nA: The answer is"

or, for chat models, `messages: [{role: system, content: ...}, {role: user, content: "{{ question }}"}]`
instead of `template`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from temper.errors import TemperError

Rendered = str | list[dict[str, str]]  # text for completion models, messages for chat models
_FIELDS = {"name", "version", "description", "variables", "template", "messages"}


class PromptTemplateError(TemperError):
    """A template is malformed, or was rendered with missing, extra or unsafe values."""


def _environment() -> SandboxedEnvironment:
    # NOTE: prompts are not HTML (no autoescape) and their trailing newlines matter to the model
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


@dataclass(frozen=True)
class PromptTemplate:
    """One version of a named prompt: a jinja2 text template or a list of chat messages whose contents are templates."""

    name: str
    version: int
    variables: tuple[str, ...]  # every variable the template reads, and only those
    template: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    description: str = ""
    _compiled: tuple[jinja2.Template, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise PromptTemplateError(f"a template's name must be a non-empty string, got {self.name!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise PromptTemplateError(f"template {self.name!r}: version must be an integer >= 1, got {self.version!r}")
        if (self.template is None) == (self.messages is None):
            raise PromptTemplateError(f"template {self.name!r}: give exactly one of `template` or `messages`")
        object.__setattr__(self, "variables", tuple(self.variables))
        if len(set(self.variables)) != len(self.variables):
            raise PromptTemplateError(f"template {self.name!r}: variables are declared twice: {list(self.variables)}")
        if self.messages is not None:
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))
            for m in self.messages:
                if set(m) != {"role", "content"}:
                    raise PromptTemplateError(f"template {self.name!r}: a message has the keys role and content, "
                                              f"got {sorted(m)}")
        env = _environment()
        sources = [self.template] if self.template is not None else [m["content"] for m in self.messages]
        try:
            compiled = tuple(env.from_string(s) for s in sources)
            used = set().union(*(meta.find_undeclared_variables(env.parse(s)) for s in sources))
        except jinja2.TemplateSyntaxError as e:
            raise PromptTemplateError(f"template {self.name!r} v{self.version}: syntax error on line {e.lineno}: "
                                      f"{e.message}") from None
        undeclared, unused = sorted(used - set(self.variables)), sorted(set(self.variables) - used)
        if undeclared or unused:
            raise PromptTemplateError(f"template {self.name!r} v{self.version}: the declared variables do not match "
                                      f"the template: used but not declared {undeclared}, declared but unused {unused}")
        object.__setattr__(self, "_compiled", compiled)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def render(self, **values: Any) -> Rendered:
        """The prompt with `values` filled in: text, or chat messages for a `messages` template.

        Raises PromptTemplateError naming the missing or extra variables, or an unsafe access the sandbox blocked.
        """
        missing, extra = sorted(set(self.variables) - set(values)), sorted(set(values) - set(self.variables))
        if missing or extra:
            raise PromptTemplateError(f"template {self.name!r} v{self.version} takes {list(self.variables)}: "
                                      f"missing {missing}, extra {extra}")
        try:
            texts = [t.render(**values) for t in self._compiled]
        except jinja2.exceptions.SecurityError as e:
            raise PromptTemplateError(f"template {self.name!r} v{self.version}: blocked by the sandbox: {e}") from None
        except jinja2.UndefinedError as e:  # e.g. `{{ question.missing_field }}`
            raise PromptTemplateError(f"template {self.name!r} v{self.version}: {e}") from None
        if self.template is not None:
            return texts[0]
        return [{"role": m["role"], "content": text} for m, text in zip(self.messages, texts)]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "<dict>") -> PromptTemplate:
        if not isinstance(raw, Mapping):
            raise PromptTemplateError(f"{where}: a template is a mapping, got {type(raw).__name__}")
        unknown = sorted(set(raw) - _FIELDS)
        if unknown:
            raise PromptTemplateError(f"{where}: unknown template fields {unknown} (allowed: {sorted(_FIELDS)})")
        for key in ("name", "version", "variables"):
            if key not in raw:
                raise PromptTemplateError(f"{where}: a template needs the field {key!r}")
        variables = raw["variables"] or []
        if not isinstance(variables, list) or not all(isinstance(v, str) for v in variables):
            raise PromptTemplateError(f"{where}: `variables` is a list of names, got {variables!r}")
        return cls(name=raw["name"], version=raw["version"], variables=tuple(variables), template=raw.get("template"),
                   messages=raw.get("messages"), description=raw.get("description") or "")


class PromptRegistry:
    """Templates by name and version; `get(name)` is the latest version."""

    def __init__(self, templates: Iterable[PromptTemplate] = ()):
        self._templates: dict[str, dict[int, PromptTemplate]] = {}
        for t in templates:
            self.add(t)

    def add(self, template: PromptTemplate) -> None:
        versions = self._templates.setdefault(template.name, {})
        if template.version in versions:
            raise PromptTemplateError(f"template {template.name!r} v{template.version} is defined twice")
        versions[template.version] = template

    def get(self, name: str, version: int | None = None) -> PromptTemplate:
        if name not in self._templates:
            raise PromptTemplateError(f"no template named {name!r}; known: {sorted(self._templates)}")
        versions = self._templates[name]
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise PromptTemplateError(f"template {name!r} has no version {version}; known: {sorted(versions)}")
        return versions[version]

    def names(self) -> list[str]:
        return sorted(self._templates)

    def versions(self, name: str) -> list[int]:
        return sorted(self._templates.get(name, {}))

    def __len__(self) -> int:
        return sum(len(v) for v in self._templates.values())

    @classmethod
    def from_paths(cls, *paths: str | os.PathLike) -> PromptRegistry:
        """Load every *.yaml / *.yml file given, or found (recursively, in sorted order) under a folder given."""
        registry = cls()
        for path in map(Path, paths):
            if not path.exists():
                raise PromptTemplateError(f"{path}: no such file or folder")
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
            for file in files:
                for template in load_yaml(file):
                    registry.add(template)
        return registry


def load_yaml(path: str | os.PathLike) -> list[PromptTemplate]:
    """The templates in one YAML file: a mapping (one template) or a list of mappings."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PromptTemplateError(f"{path}: not valid YAML: {e}") from None
    items = raw if isinstance(raw, list) else [raw]
    return [PromptTemplate.from_dict(item, where=f"{path}[{i}]") for i, item in enumerate(items)]
