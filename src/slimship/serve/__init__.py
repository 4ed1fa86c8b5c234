"""``slimship serve``: an HTTP model server for ``.slim`` packages (FastAPI + uvicorn, the ``serve`` extra).

- :mod:`~slimship.serve.models`: load and verify the packages (hashes, signatures), warm them up;
- :mod:`~slimship.serve.inputs`: decode a request's inputs, per input kind (the seam for text), within limits;
- :mod:`~slimship.serve.batcher`: dynamic batching;
- :mod:`~slimship.serve.metrics`: Prometheus metrics;
- :mod:`~slimship.serve.app`: the endpoints; :mod:`~slimship.serve.server`: uvicorn, binding, shutdown.

Layering: ``serve`` sits above ``package`` (it only consumes packages) beside ``recipe`` (neither needs the
other), below ``api``/``cli`` (pyproject.toml's import-linter contract). Embedding without HTTP is
``slimship.load(PKG).predict(images)``. Example::

    from slimship.serve import AppConfig, create_app, load_models
    app = create_app(load_models(["shoes=model.slim"]), AppConfig())   # any ASGI server can run it
"""

from slimship.serve.app import AppConfig, create_app
from slimship.serve.batcher import BatchingConfig
from slimship.serve.inputs import INPUT_KINDS, Limits, RequestError
from slimship.serve.models import ServedModel, load_models
from slimship.serve.server import ServerConfig, run_server

__all__ = ["INPUT_KINDS", "AppConfig", "BatchingConfig", "Limits", "RequestError", "ServedModel", "ServerConfig",
           "create_app", "load_models", "run_server"]
