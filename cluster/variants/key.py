"""The key of a model variant: what its weights are, independent of where it runs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Bumped when the way variants are built changes, so cached variants are rebuilt.
VARIANT_SCHEMA = 1


def variant_key(identity: str, recipe_fields: dict[str, Any], calibration_digest: str | None, dtype: str) -> str:
    """Hex sha256 of the model identity, the recipe, the calibration text digest and the dtype."""
    payload = {
        "schema": VARIANT_SCHEMA,
        "model": identity,
        "recipe": recipe_fields,
        "calibration": calibration_digest,
        "dtype": dtype,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
