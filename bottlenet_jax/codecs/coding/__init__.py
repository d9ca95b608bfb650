"""Entropy coders shared by the codecs: batch-parallel rANS in XLA (`rans`) and the one wrapper of
constriction's range coder (`rangecoder`). They code symbols under integer tables; what the
symbols and tables are belongs to each codec."""
