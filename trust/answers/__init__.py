"""Answers: mapping free text onto a benchmark's answer space, and refusal detection."""
