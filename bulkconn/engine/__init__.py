"""The engine: workers and fairness (:mod:`.engine`), lanes and per-operation state (:mod:`.lane`),
and sending one request per batch (:mod:`.dispatch`)."""

from bulkconn.engine.engine import Engine, EngineSettings

__all__ = ["Engine", "EngineSettings"]
