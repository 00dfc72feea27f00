"""The labelling convention every task follows: a label of :data:`IGNORE_INDEX` marks a position
that counts in neither the loss nor the accuracy (MQAR labels only the values to recall).
It is ``torch.nn.functional.cross_entropy``'s default ``ignore_index``."""

IGNORE_INDEX = -100
