"""Small shared machinery: registry, config, catalogs, distributed comm, checkpointing, logging, events."""
