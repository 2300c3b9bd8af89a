"""How work spreads over accelerators: many devices' steps at once
(`engine.for_each_device`: loop, vmap or sharded) and the cloud's data and
parameter mesh (`mesh`)."""
