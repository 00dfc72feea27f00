"""The comparison lab: sweeps that train many runs on equal terms (:mod:`.sweeps`) and the
analysis that reads them back into tables and figures (:mod:`.analysis`). The commands that
drive them are ``hybrids sweep`` and ``hybrids plot`` (:mod:`hybrids.cli`)."""
