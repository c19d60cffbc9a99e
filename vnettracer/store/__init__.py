"""The InfluxDB side: client (bounded queries into pandas), line protocol, the agent's writer."""
