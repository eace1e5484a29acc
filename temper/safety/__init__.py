"""Safety: guard checks on inputs, documents and outputs, and the red-team harness."""
