"""Data: task generators (pure functions) and their LightningDataModules."""

from hybrids.data.datamodule import MQAR
from hybrids.data.labels import IGNORE_INDEX
from hybrids.data.mqar import multiquery_ar

__all__ = ["IGNORE_INDEX", "MQAR", "multiquery_ar"]
