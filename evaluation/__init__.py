"""HumanRef evaluation: the benchmark metric (``evaluation.metric``) and its reports."""
