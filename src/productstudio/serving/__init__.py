"""Serving: TorchServe archive and handler, the nginx canary proxy, KServe manifests."""
