"""Output of runs: capture to terminal + storage + followers, progress parsing, tails."""
