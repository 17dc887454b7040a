"""The training side: data loading, EDA, the baseline, fine-tuning, export, evaluation and error analysis,
and retraining from reviewed labels. Versions are published through ``emostream.model.registry``."""
