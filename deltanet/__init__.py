"""deltanet-repro: DeltaNet chunkwise-loop variants on the MAD synthetic benchmark."""

__version__ = "0.1.0"
