"""The tracer agent that runs on every traced host: loads the BPF object, attaches hooks, drains
events to the spool, records clock pairs and stats, serves a control socket."""
