"""Learned entropy models and the codecs built on them (CompressAI's grouping, read as an idea):
`density` (Ballé's factorized prior), `tables` (its integer tables: per channel, element or
neighbour state), `streams` (their batch rANS streams), `range_format` (the older range-coded
streams), `factorized` (the "entropy" codec: the Entropic Student's bottleneck)."""

from bottlenet_jax.codecs.entropy.factorized import EntropyCodec

__all__ = ["EntropyCodec"]
