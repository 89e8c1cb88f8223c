"""The plan: a validated spec expanded into variants, benchmark items, item keys, judges and calibration sets."""
