"""Learned entropy models and the codecs built on them (CompressAI's grouping, read as an idea):
`density` (Ballé's factorized prior), `tables` (its integer tables: per channel, element or
neighbour state; the symbols' rows), `streams` (their batch rANS streams), `range_format` (the older
range-coded streams), `factorized` (the "entropy" codec: the Entropic Student's bottleneck);
`hyperprior` (the "hyperprior" codec: its mean-scale hyperprior) with `integer_net` (integer hyper
networks: the same indices on every machine), `gaussian` (the scale table and its integer tables),
`hyper_model` (its symbols and rows) and `hyper_streams` (its rANS coder). density, tables,
integer_net and hyper_model need numpy only (JAX where given arrays of it); importing the package
imports none of them."""
