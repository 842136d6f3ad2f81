"""Learning from the model's own samples: rejection sampling (RFT and DPO data), preference pairs
(DPO), online group-relative policy optimisation (GRPO)."""
