"""Training plumbing shared by the SFT and GRPO stages: processes, the learner, checkpoints, logs."""
