"""Which layers a recipe quantizes: keep_full_precision, mixed-precision overrides, group-size checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from cluster.quantization.checks import (
    read_model_config,
    recipe_shape_problems,
    shape_from_config,
)
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.targets import (
    QuantizationError,
    decoder_blocks,
    matches,
    plan_targets,
)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def test_patterns_match_names_suffixes_and_regexes() -> None:
    name = "model.layers.3.mlp.down_proj"
    assert matches(name, name)
    assert matches(name, "down_proj") and matches(name, "mlp.down_proj")
    assert not matches(name, "proj") and not matches(name, "up_proj")
    assert matches(name, r"re:model\.layers\.\d+\.mlp\..*")
    assert not matches(name, r"re:layers\.3")  # regexes match the whole name


def test_plan_covers_every_linear_except_kept_and_tied(tiny) -> None:
    plan = plan_targets(tiny, QuantRecipe(method="rtn", bits=4, group_size=32, keep_full_precision=["down_proj"]))
    assert decoder_blocks(tiny) == ["model.layers.0", "model.layers.1"]
    assert "lm_head" in plan.full_precision  # tied to the embeddings
    assert {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"} <= set(plan.full_precision)
    assert len(plan.layers) == 2 * 6  # q, k, v, o, gate, up per block
    assert set(plan.bits_histogram()) == {4}


def test_overrides_give_first_and_last_blocks_other_bits(tiny) -> None:
    recipe = QuantRecipe(
        method="gptq", bits=3, group_size=32, overrides=[{"blocks": [-1], "bits": 8, "group_size": 64}]
    )
    plan = plan_targets(tiny, recipe)
    assert plan.layers["model.layers.1.self_attn.q_proj"].bits == 8
    assert plan.layers["model.layers.1.self_attn.q_proj"].group_size == 64
    assert plan.layers["model.layers.0.self_attn.q_proj"].bits == 3
    assert plan.bits_histogram() == {3: 7, 8: 7}
    by_module = plan_targets(
        tiny, QuantRecipe(method="rtn", bits=4, overrides=[{"blocks": [0], "modules": ["v_proj"], "bits": 8}])
    )
    assert [n for n, q in by_module.layers.items() if q.bits == 8] == ["model.layers.0.self_attn.v_proj"]


def test_bad_overrides_and_group_sizes_name_the_layer_and_a_fix(tiny) -> None:
    with pytest.raises(QuantizationError, match="has 2 decoder blocks"):
        plan_targets(tiny, QuantRecipe(method="rtn", bits=4, overrides=[{"blocks": [5], "bits": 8}]))
    with pytest.raises(QuantizationError, match="selects no linear layer"):
        plan_targets(tiny, QuantRecipe(method="rtn", bits=4, overrides=[{"modules": ["nothing_here"], "bits": 8}]))
    with pytest.raises(QuantizationError) as info:
        plan_targets(tiny, QuantRecipe(method="rtn", bits=4, group_size=48))
    assert "does not divide in_features 128" in str(info.value) and "such as 32" in str(info.value)


def test_shape_checks_before_loading(tiny_model_dir: Path) -> None:
    builtin = shape_from_config(read_model_config("smollm2-135m"))
    assert builtin is not None and builtin.input_widths["hidden_size"] == 576 and builtin.num_blocks == 30
    problems = recipe_shape_problems(QuantRecipe(method="gptq", bits=4, group_size=128), builtin)
    assert problems and "group_size 128 does not divide hidden_size 576" in problems[0] and "64" in problems[0]
    assert recipe_shape_problems(QuantRecipe(method="gptq", bits=4, group_size=64), builtin) == []
    assert recipe_shape_problems(QuantRecipe(method="rtn", bits=4, overrides=[{"blocks": [30], "bits": 8}]), builtin)
    tiny_shape = shape_from_config(read_model_config(str(tiny_model_dir)))
    assert tiny_shape is not None and tiny_shape.input_widths == {"hidden_size": 128, "intermediate_size": 256}
    assert read_model_config("no-such-org/no-such-model") is None
