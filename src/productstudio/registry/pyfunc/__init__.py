"""One MLflow pyfunc model per served task, each logged "from code" (its own file, no pickle); the table is ``tasks.py``."""
