"""Red-team harness: attack an OpenAI-compatible endpoint, judge the replies, report ASR and over-refusal."""
