"""Who and what the lab serves: datasets and their catalogue (data, not code)."""
