"""Storage locations over ``pyarrow.fs``: URIs, redaction of credentials, atomic writes."""
