"""Served tasks: TorchServe-free contracts (parse, run, encode) behind one generic handler."""
