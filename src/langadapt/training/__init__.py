"""Training and evaluation: data readers, language adapters (MLM), task adapters, baselines, reports."""
