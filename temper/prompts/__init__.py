"""Prompt engineering patterns: templates, few-shot selection, zero-shot CoT, self-consistency, structured output."""
from temper.prompts.answers import parse_choice, parse_number
from temper.prompts.cot import answer_prompt, reasoning_prompt, zero_shot_cot
from temper.prompts.fewshot import Example, SimilarExampleSelector, StaticExamples
from temper.prompts.self_consistency import majority_vote, self_consistency
from temper.prompts.structured import StructuredOutputError, generate_structured
from temper.prompts.templates import PromptRegistry, PromptTemplate, PromptTemplateError

__all__ = ["Example", "PromptRegistry", "PromptTemplate", "PromptTemplateError", "SimilarExampleSelector",
           "StaticExamples", "StructuredOutputError", "answer_prompt", "generate_structured", "majority_vote",
           "parse_choice", "parse_number", "reasoning_prompt", "self_consistency", "zero_shot_cot"]
