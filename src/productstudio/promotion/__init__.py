"""Promotion: champion/challenger measured under one protocol (``measure``) and a pure policy (``policy``)."""
