"""The inference core: one base model, per-row adapter stacks, every task and language in shared passes.

`engine.Engine` (tokenise into windows, lease stacks from `cache.AdapterCache`, forward on a `backends`
backend, heads, decode), `routing` (language code and task → adapter stack over the store view), `errors`
(`ServeError`, the error a request is answered with). No LitServe, no Ray, no training: the HTTP server
(`langadapt.serve`), batch labeling (`langadapt.label`) and the Ray apps build on it.
"""
