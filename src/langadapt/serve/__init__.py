"""Serving: language-routed inference with per-row adapter stacks, over HTTP (LitServe) or as a Python engine.

The request path: `gateway` (auth, limits, admission, request metrics) → LitServe's handler and queue →
`api.TaskAPI` (one LitAPI per task: routing in `decode_request`, batches in `predict`) → `engine.Engine`
(tokenise into windows, lease stacks from `cache.AdapterCache`, forward on a `backends` backend, heads,
decode) → JSON (`schemas`). `routing` resolves language codes to stacks over the layered store view;
`control` carries admin operations to every worker and follows the store for hot loading; `metrics` is
Prometheus in multiprocess mode; `app.build_server` assembles it all; `cli_serve` is `langadapt serve`.

Public API: `Engine`, `EngineSettings`, `Job`, `TextResult` (engine); `build_server`, `ServerConfig` (app);
`AdapterCache` (cache); `Router`, `Route`, `LayeredStore` (routing); `langadapt.client.Client` for HTTP.
"""
