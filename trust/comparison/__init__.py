"""Comparisons with the reference: statistics, flips, degenerate-variant flags, precision ensembles
and the search over them."""
