"""Learned entropy models and the codecs built on them (CompressAI's grouping, read as an idea):
`density` (Ballé's factorized prior), `tables` (its integer tables: per channel, element or
neighbour state), `streams` (their batch rANS streams), `range_format` (the older range-coded
streams), `factorized` (the "entropy" codec: the Entropic Student's bottleneck); `hyperprior` (the
"hyperprior" codec: its mean-scale hyperprior) with `integer_net` (integer hyper networks: the same
indices on every machine), `gaussian` (the scale table and its integer tables) and `hyper_streams`
(its symbols and rANS streams)."""

from bottlenet_jax.codecs.entropy.factorized import EntropyCodec
from bottlenet_jax.codecs.entropy.hyperprior import HyperpriorCodec

__all__ = ["EntropyCodec", "HyperpriorCodec"]
