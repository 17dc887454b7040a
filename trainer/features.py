"""Hidden states of a frozen encoder as features, the chapter's feature-extraction approach."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from emostream.model.runtime import batches_by_length, resolve_device

Pooling = Literal["cls", "mean"]


@torch.inference_mode()
def extract_hidden_states(
    model_name_or_path: str,
    texts: Sequence[str],
    *,
    pooling: Pooling = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "auto",
    desc: str = "hidden states",
) -> np.ndarray:
    """One vector per text from the encoder's last hidden layer.

    ``cls`` takes the first token's state, as the book does for DistilBERT; ``mean`` averages the
    non-padding tokens, which is how all-MiniLM-L6-v2 (a sentence-transformers model) was trained to
    summarise a sentence and gives it the better features.
    """
    torch_device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    model = AutoModel.from_pretrained(model_name_or_path).to(torch_device).eval()
    features = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with tqdm(total=len(texts), desc=desc, unit="tweet") as progress:
        for index in batches_by_length(texts, batch_size):
            encoded = tokenizer(
                [texts[i] for i in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(torch_device)
            hidden = model(**encoded).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            features[index] = pooled.float().cpu().numpy()
            progress.update(len(index))
    return features
