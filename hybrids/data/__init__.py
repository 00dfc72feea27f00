"""Data: task generators (pure functions) and their LightningDataModules."""

from hybrids.data.datamodule import MQAR
from hybrids.data.mqar import IGNORE_INDEX, multiquery_ar

__all__ = ["IGNORE_INDEX", "MQAR", "multiquery_ar"]
