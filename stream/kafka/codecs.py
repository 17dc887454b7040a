"""Faust codecs for the pydantic wire models, so topics carry exactly ``Model.model_dump_json()``."""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs
from pydantic import BaseModel

from emostream.schemas import DeadLetter, EmotionScore, ReviewItem, Tweet


class PydanticCodec(codecs.Codec):
    """JSON through a pydantic model: validated on the way in, the model's own JSON on the way out."""

    def __init__(self, model: type[BaseModel], **kwargs: Any) -> None:
        self.model = model
        super().__init__(model=model, **kwargs)

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, self.model):
            obj = self.model.model_validate(obj)
        model: BaseModel = obj
        return model.model_dump_json().encode()

    def _loads(self, s: bytes) -> Any:
        return self.model.model_validate_json(s)


CODECS: dict[str, type[BaseModel]] = {
    "emostream.tweet": Tweet,
    "emostream.score": EmotionScore,
    "emostream.review": ReviewItem,
    "emostream.dead_letter": DeadLetter,
}


def register_codecs() -> None:
    """Register with Faust a :class:`PydanticCodec` per name of :data:`CODECS`, for topics' ``value_serializer``."""
    for name, model in CODECS.items():
        codecs.register(name, PydanticCodec(model))
