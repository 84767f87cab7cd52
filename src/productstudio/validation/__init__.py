"""Validation: metadata table, Great Expectations suite, report and quarantine (``validate``)."""
