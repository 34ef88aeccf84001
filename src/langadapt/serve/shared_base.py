"""The base model loaded once in the workers' fork server, so that every CPU worker forked from it shares its pages.

`SupervisedServer` sets `SHARED_BASE_ENV` to the base (as `--base` names it) before the fork server starts, and
the fork server imports this module with the rest of the inference stack. The workers then take the loaded
encoder and tokenizer instead of loading them again: two workers on one machine hold one copy of the base and
its tokenizer (measured in bench/pool.py). When loading fails here, nothing is shared: each worker loads (and
reports) the base itself.
"""

from __future__ import annotations

import gc
import logging
import os

SHARED_BASE_ENV = "LANGADAPT_SHARED_BASE"

log = logging.getLogger(__name__)


def load_shared_base() -> bool:
    """Load the base named by `SHARED_BASE_ENV`, if any, for the workers to come; True when it was loaded."""
    spec = os.environ.get(SHARED_BASE_ENV)
    if not spec:
        return False
    import torch

    from langadapt.inference.shared import share_base
    from langadapt.models.base import resolve_base_model

    # one thread: a fork server must not start an OpenMP thread team its forked workers would inherit half of
    torch.set_num_threads(1)
    try:
        share_base(resolve_base_model(spec))
    except Exception as error:  # each worker then loads the base itself and reports what fails
        log.warning("could not load the base %r to share among the workers: %s", spec, error)
        return False
    return True


load_shared_base()
# The fork server's objects (the imported stack, the base) move to a generation the collector never scans, so a
# worker's collections do not write to, and so copy, the pages it shares with the fork server.
gc.freeze()
