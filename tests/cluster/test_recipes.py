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
    assert recipe.describe() == {"method": "none", "label": "none", "storage": "none"}


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


def test_gptq_and_awq_store_packed_at_4_and_8_bits_and_simulated_otherwise() -> None:
    assert QuantRecipe(method="gptq", bits=4).resolved_storage == "packed"
    assert QuantRecipe(method="awq", bits=8).resolved_storage == "packed"
    assert QuantRecipe(method="awq", bits=3).resolved_storage == "simulated"
    assert QuantRecipe(method="gptq", bits=2, storage="simulated").resolved_storage == "simulated"
    assert QuantRecipe(method="rtn", bits=4).resolved_storage == "simulated"
    assert QuantRecipe(method="rtn", bits=4, storage="packed").resolved_storage == "packed"
    mixed = QuantRecipe(method="gptq", bits=4, overrides=[{"blocks": [0], "bits": 3}])
    assert mixed.resolved_storage == "simulated"
    assert mixed.label.endswith("-mixed")


def test_packed_storage_at_3_bits_is_refused_with_the_alternative() -> None:
    with pytest.raises(ValidationError) as info:
        QuantRecipe(method="awq", bits=3, storage="packed")
    text = str(info.value)
    assert "awq at 3 bits cannot be stored packed" in text
    assert "storage: simulated" in text


def test_calibration_defaults_for_gptq_and_is_refused_elsewhere() -> None:
    recipe = QuantRecipe(method="gptq", bits=4)
    assert recipe.calibration is not None and recipe.calibration.source == "builtin"
    info = recipe.describe()
    assert info["calibration.samples"] == str(recipe.calibration.samples)
    with pytest.raises(ValidationError, match="calibration applies to gptq, awq, aqlm, quip_sharp and quik only"):
        QuantRecipe(method="rtn", bits=4, calibration={"samples": 8})
    with pytest.raises(ValidationError, match="names no benchmark"):
        QuantRecipe(method="awq", bits=4, calibration={"source": "benchmark:"})


def test_bnb_derives_bits_and_type_and_refuses_other_widths() -> None:
    assert QuantRecipe(method="bnb", bits=4).bnb_type == "nf4"
    assert QuantRecipe(method="bnb", bits=8).bnb_type == "int8"
    assert QuantRecipe(method="bnb", bnb_type="fp4").bits == 4
    assert QuantRecipe(method="bnb", bnb_type="fp4").label == "bnb-fp4"
    with pytest.raises(ValidationError, match="bnb quantizes to 8 bits"):
        QuantRecipe(method="bnb", bits=3)
    with pytest.raises(ValidationError, match="bnb_type int8 is 8-bit but bits is 4"):
        QuantRecipe(method="bnb", bits=4, bnb_type="int8")
    with pytest.raises(ValidationError, match="bnb_type applies to method 'bnb' only"):
        QuantRecipe(method="rtn", bits=4, bnb_type="nf4")


def test_hqq_widths_and_field_combinations() -> None:
    assert QuantRecipe(method="hqq", bits=3).precision_bits == 3.0
    with pytest.raises(ValidationError, match="hqq quantizes to"):
        QuantRecipe(method="hqq", bits=7)
    with pytest.raises(ValidationError, match="storage applies to rtn, gptq and awq only"):
        QuantRecipe(method="hqq", bits=4, storage="packed")
    with pytest.raises(ValidationError, match="source and revision apply to method 'prequantized' only"):
        QuantRecipe(method="gptq", bits=4, source="/tmp/x")


def test_overrides_need_a_selection_and_valid_patterns() -> None:
    with pytest.raises(ValidationError, match="an override needs 'blocks'"):
        QuantRecipe(method="rtn", bits=4, overrides=[{"bits": 8}])
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        QuantRecipe(method="rtn", bits=4, keep_full_precision=["re:model.(layers"])
    with pytest.raises(ValidationError, match="overrides \\(mixed precision\\) apply to"):
        QuantRecipe(method="bnb", bits=4, overrides=[{"blocks": [0], "bits": 8}])


def test_prequantized_reads_bits_later_and_keys_exclude_nothing_that_matters() -> None:
    recipe = QuantRecipe(method="prequantized", source="/models/llama-awq")
    assert recipe.bits is None and recipe.resolved_storage == "prequantized"
    a = QuantRecipe(method="gptq", bits=4, calibration={"seed": 0}).key_fields()
    b = QuantRecipe(method="gptq", bits=4, calibration={"seed": 1}).key_fields()
    assert a != b
