"""Stage 2: GRPO, sampling groups of completions, scoring them with rule-based rewards, and updating."""
