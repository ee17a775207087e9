"""Ingestion: the run loop and everything it stands on.

:mod:`.run` holds :func:`ndstream.ingest`, the loop over the batches; :mod:`.sample_order`
the seeded order in which a run visits the samples, and its steps; :mod:`.batches` the
batches of those steps, from a dataset or a loader; :mod:`.sources` the models and datasets a
config names, and :mod:`.from_config` the run of a config; :mod:`.identity` what must match
for a run to resume a store; :mod:`.worker` the background thread of the sketch updates and
the thread budget; :mod:`.ranks` the processes of a ``torchrun`` job; :mod:`.fingerprint`
the hashes of a model and a dataset. Nothing is imported here: each module is imported where
it is used, so that reading a store never pays for torch.
"""
