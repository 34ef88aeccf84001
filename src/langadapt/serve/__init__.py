"""Serving: the inference engine, adapter cache, LitServe app, metrics, auth and batch labeling."""
