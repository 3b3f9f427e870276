"""Work on a request that needs no store, done in other processes so that the event loop's core is left to the
store: parsing, validating and indexing the resources of large transaction Bundles (:mod:`.transaction`), in a pool
of worker processes (:mod:`.pool`)."""
