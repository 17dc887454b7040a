"""The training side: data loading, EDA, baseline, fine-tuning, evaluation, error analysis, model registry."""
