"""A local SageMaker: the SageMaker API with real XGBoost training and Batch Transform.

``LocalSageMaker`` is imported lazily so that the per-host training processes
(``python -m m5flow_local.sagemaker.algorithm``) do not pay for the HTTP server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m5flow_local.sagemaker.server import LocalSageMaker

__all__ = ["LocalSageMaker"]


def __getattr__(name: str) -> Any:
    if name == "LocalSageMaker":
        from m5flow_local.sagemaker.server import LocalSageMaker

        return LocalSageMaker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
