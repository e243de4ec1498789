"""A local SageMaker: the SageMaker API with real XGBoost training and Batch Transform."""

from m5flow_local.sagemaker.server import LocalSageMaker

__all__ = ["LocalSageMaker"]
