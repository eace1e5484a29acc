"""Evaluation suites, result sets and the report: `temper eval`, `temper report`, `temper pipeline`."""
