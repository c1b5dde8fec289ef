//! Shared fixtures for ucm's cross-backend conformance suite (the suite itself lives in `tests/tests/`).
