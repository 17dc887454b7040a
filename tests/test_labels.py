import pytest

from emostream.schemas import ID2LABEL, LABEL2ID, LABELS, label_id


def test_labels_follow_the_hub_order() -> None:
    assert LABELS == ("sadness", "joy", "love", "anger", "fear", "surprise")
    assert all(LABEL2ID[ID2LABEL[i]] == i for i in range(6))


@pytest.mark.parametrize(("value", "expected"), [("joy", 1), ("Fear", 4), (" surprise ", 5), (3, 3), ("2", 2)])
def test_label_id_accepts_names_and_ids(value: str | int, expected: int) -> None:
    assert label_id(value) == expected


@pytest.mark.parametrize("value", ["boredom", "", 6, -1, "7", True])
def test_label_id_names_the_bad_value(value: object) -> None:
    with pytest.raises(ValueError, match="unknown label") as info:
        label_id(value)  # type: ignore[arg-type]
    assert "sadness" in str(info.value)
