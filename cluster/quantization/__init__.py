"""Weight quantization recipes and the methods that apply them to a loaded model."""

from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.rtn import RtnReport, quantize_model_rtn

__all__ = ["QuantRecipe", "RtnReport", "quantize_model_rtn"]
