"""Tools: intent-model training and comparison, evaluation metrics and weight conversion
(their `voicebot` commands are registered as entry points in pyproject.toml)."""
