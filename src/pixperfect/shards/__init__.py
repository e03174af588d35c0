"""Webdataset shards: build them once (``build``), check them (``verify``), stream them into
training (``reader``). ``format`` owns how one sample is stored."""
