"""Problems: one schema, loaders for GSM8K, AQuA-RAT and the synthetic task, answer scoring."""
