//! Retry: exponential backoff with full jitter, bounded attempts and a retry budget.
