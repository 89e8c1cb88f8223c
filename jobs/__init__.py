"""What the user launches: sweep spec, plan, shards, scheduler, store, tracking and the CLI."""
