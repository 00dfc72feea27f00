"""What mixers are built from, below the mixers themselves: the attention KV cache
(:mod:`.kv_cache`), the feature maps of linearised attention (:mod:`.feature_maps`), and the
external memory with its nearest-neighbour search of the Memorizing Transformer (:mod:`.knn_memory`).
"""
