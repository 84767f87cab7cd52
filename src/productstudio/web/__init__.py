"""The studio page: a browser door for merchants over the served models and the registry (app.py)."""
