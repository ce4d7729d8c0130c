"""Stage 1: supervised fine-tuning on plan / action / summarize traces."""
