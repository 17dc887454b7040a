from datetime import UTC, datetime

import pytest
from faust.serializers import codecs
from pydantic import ValidationError

from emostream.schemas import DeadLetter, EmotionScore, ReviewItem, Tweet
from emostream.stream.kafka.codecs import register_codecs


def test_tweet_defaults_and_ignores_unknown_fields() -> None:
    tweet = Tweet.model_validate({"id": "1", "text": "hello", "retweets": 5, "brand": "acme"})
    assert tweet.brand == "acme" and tweet.created_at.tzinfo is not None
    assert not hasattr(tweet, "retweets")


def test_long_text_is_accepted() -> None:
    assert len(Tweet(id="1", text="word " * 5000).text) == 25000


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        ({"text": "no id"}, "id", "Field required"),
        ({"id": "1"}, "text", "Field required"),
        ({"id": "1", "text": "   "}, "text", "must not be blank"),
        ({"id": "1", "text": 42}, "text", "must be a string"),
        ({"id": 7, "text": "a"}, "id", "must be a string"),
        ({"id": None, "text": "a"}, "id", "Input should be a valid string"),
        ({"id": "1", "text": "a", "created_at": "2024-01-01T00:00:00"}, "created_at", "timezone"),
    ],
)
def test_invalid_tweets_name_the_field(payload: dict, field: str, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        Tweet.model_validate(payload)
    error = info.value.errors()[0]
    assert error["loc"] == (field,)
    assert problem in error["msg"]


def score(confidence: float = 0.9) -> EmotionScore:
    now = datetime.now(UTC)
    rest = (1 - confidence) / 5
    return EmotionScore(
        tweet_id="1",
        brand="acme",
        created_at=now,
        scored_at=now,
        model_version="v0001",
        label="joy",
        confidence=confidence,
        margin=confidence - rest,
        sadness=rest,
        joy=confidence,
        love=rest,
        anger=rest,
        fear=rest,
        surprise=rest,
    )


def test_codecs_round_trip_every_wire_model() -> None:
    register_codecs()
    tweet = Tweet(id="1", text="hi")
    cases = {
        "emostream.tweet": tweet,
        "emostream.score": score(),
        "emostream.review": ReviewItem(tweet=tweet, score=score(0.4), reason="confidence 0.40 < 0.60"),
        "emostream.dead_letter": DeadLetter(topic="tweets", partition=1, offset=9, value=b"\xff\xfe", error="bad"),
    }
    for name, value in cases.items():
        codec = codecs.get_codec(name)
        assert codec.loads(codec.dumps(value)) == value
