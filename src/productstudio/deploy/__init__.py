"""Deployment of registered versions: local nginx canary (``local_canary``, ``nginx_proxy``) and KServe manifests (``kserve``)."""
