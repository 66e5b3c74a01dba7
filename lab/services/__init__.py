"""Use cases, independent of HTTP and CLI (queries, governance, extracts, airlock, onboarding)."""
