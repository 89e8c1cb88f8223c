"""QuantRecipe validation and description."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.quantization.recipes import QuantRecipe


def test_defaults_are_unquantized() -> None:
    recipe = QuantRecipe()
    assert recipe.method == "none"
    assert recipe.bits is None
    assert recipe.precision_bits == 32.0
    assert recipe.describe() == {"method": "none", "label": "none"}


def test_rtn_recipe_describes_itself() -> None:
    recipe = QuantRecipe(method="rtn", bits=4, group_size=32, symmetric=True)
    assert recipe.precision_bits == 4.0
    info = recipe.describe()
    assert info["bits"] == "4"
    assert info["group_size"] == "32"
    assert info["symmetric"] == "true"
    assert recipe.label == "rtn-w4-g32-sym"
    per_channel = QuantRecipe(method="rtn", bits=8, group_size=None)
    assert per_channel.describe()["group_size"] == "per-channel"


def test_precision_orders_variants() -> None:
    recipes = [QuantRecipe(method="rtn", bits=b) for b in (2, 8, 4)] + [QuantRecipe()]
    ordered = sorted(recipes, key=lambda r: r.precision_bits, reverse=True)
    assert [r.bits for r in ordered] == [None, 8, 4, 2]


@pytest.mark.parametrize("bits", [0, 1, 9, 16, -4])
def test_bits_out_of_range(bits: int) -> None:
    with pytest.raises(ValidationError) as info:
        QuantRecipe(method="rtn", bits=bits)
    text = str(info.value)
    assert "bits" in text
    assert "2 to 8" in text


def test_rtn_requires_bits() -> None:
    with pytest.raises(ValidationError) as info:
        QuantRecipe(method="rtn")
    assert "bits is required" in str(info.value)


def test_none_rejects_bits() -> None:
    with pytest.raises(ValidationError) as info:
        QuantRecipe(method="none", bits=4)
    assert "bits must be null for method 'none'" in str(info.value)


@pytest.mark.parametrize("group_size", [0, -64])
def test_bad_group_size(group_size: int) -> None:
    with pytest.raises(ValidationError) as info:
        QuantRecipe(method="rtn", bits=4, group_size=group_size)
    text = str(info.value)
    assert "group_size" in text
    assert "positive" in text


def test_unknown_method_and_extra_fields_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        QuantRecipe(method="gptq-ish", bits=4)
    assert "method" in str(info.value)
    with pytest.raises(ValidationError) as info:
        QuantRecipe(method="rtn", bits=4, bitz=3)
    assert "bitz" in str(info.value)


def test_round_trips_through_json() -> None:
    recipe = QuantRecipe(method="rtn", bits=3, group_size=None, symmetric=False)
    assert QuantRecipe.model_validate_json(recipe.model_dump_json()) == recipe
