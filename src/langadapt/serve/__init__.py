"""Serving over HTTP (LitServe) on the inference core (`langadapt.inference`).

The request path: `gateway` (auth, limits, admission, request metrics) → LitServe's handler and queue →
`api` (one LitAPI for every task: routing in `decode_request`, batches in `predict`) → `langadapt.inference`
(engine, cache, backends) → JSON (`schemas`). `control` carries admin operations to every worker and follows
the store for hot loading; `metrics` is Prometheus in multiprocess mode; `settings` is what the server is told
(`ServerSettings`, over the inference core's `InferenceSettings`); `supervisor` replaces dead workers and drains
on SIGTERM; `admin_key` generates the admin key when none is configured; `app.build_server` assembles it all;
`cli_serve` is `langadapt serve`; `ray_app` is the Ray Serve application.

Public API: `build_server` (app), `ServerSettings` (settings); `langadapt.client.Client` for HTTP.
"""
